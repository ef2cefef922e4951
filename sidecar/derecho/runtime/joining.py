"""A joiner asks a running group to admit it (derecho-protocols.md 2.7, over TCP).

It sends JOIN to any member's peer port; a member that does not lead answers with the
leader's address, the leader proposes the joiner in the next view change and, once that view
is installed, sends WELCOME: the view and every member's address. The joiner then starts as
a member of that view (the Sidecar), dials every member, and receives its shards' state.

Anything short of WELCOME (a refused connection, "not now", a leader that fails mid-change)
means: ask again, through the next contact, until `membership.join_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from ..config import SidecarConfig, parse_address
from ..core.view import View, view_from_dict
from ..wire import frames
from ..wire.types import PROTOCOL_VERSION, T

log = logging.getLogger(__name__)

MAX_REDIRECTS = 8


class JoinError(Exception):
    """The group could not be joined; the message says what was tried and what to do."""


@dataclass
class Welcome:
    view: View
    addresses: dict[int, tuple[str, int]]
    via: str


async def join_group(config: SidecarConfig, contacts: list[str]) -> Welcome:
    """Ask through `contacts` in turn until admitted; raises JoinError after join_timeout."""
    if not contacts:
        raise JoinError("no member to contact: set membership.join (or list the group's members) in the config")
    deadline = time.monotonic() + config.membership.join_timeout
    delay = 0.05
    last = "no answer yet"
    turn = 0
    while time.monotonic() < deadline:
        address = contacts[turn % len(contacts)]
        turn += 1
        for _ in range(MAX_REDIRECTS):
            try:
                outcome = await _ask(config, address, deadline)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                last = f"{address}: {exc or type(exc).__name__}"
                log.info("join through %s failed: %s", address, last)
                break
            if isinstance(outcome, Welcome):
                return outcome
            kind, text = outcome
            if kind == "leader":
                log.info("%s redirects this joiner to the leader at %s", address, text)
                address = text
                continue
            last = f"{address}: {text}"
            log.info("join through %s not now: %s", address, text)
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise JoinError(
        f"member {config.node_id} was not admitted within membership.join_timeout "
        f"({config.membership.join_timeout:g} s); tried {contacts}; last answer: {last}. "
        "Check that a majority of the group runs and that these addresses are its peer ports"
    )


async def _ask(config: SidecarConfig, address: str, deadline: float) -> Welcome | tuple[str, str]:
    host, port = parse_address(address)
    remaining = max(0.1, deadline - time.monotonic())
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), min(remaining, 5.0))
    try:
        writer.write(
            frames.encode(
                {
                    "t": T.JOIN,
                    "node": config.node_id,
                    "group": config.group,
                    "proto": PROTOCOL_VERSION,
                    "a": config.me.address,
                }
            )
        )
        await writer.drain()
        decoder = frames.FrameDecoder(1 << 24)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no WELCOME before the join timeout")
            data = await asyncio.wait_for(reader.read(1 << 16), remaining)
            if not data:
                raise ConnectionError("the member closed the connection")
            for frame in decoder.feed(data):
                if isinstance(frame, frames.FrameError):
                    raise ValueError(f"bad frame from {address}: {frame.reason}")
                header = frame.header
                kind = header.get("t")
                if kind == T.ERROR:
                    return ("error", str(header.get("m")))
                if kind == T.JOIN_REPLY:
                    if header.get("leader"):
                        return ("leader", str(header["leader"]))
                    if not header.get("ok"):
                        return ("later", str(header.get("m", "refused")))
                    log.info("%s proposed this member for the next view; waiting for it", address)
                elif kind == T.WELCOME:
                    view = view_from_dict(header["view"])
                    addresses = {int(k): parse_address(v) for k, v in header["a"].items()}
                    return Welcome(view, addresses, address)
    finally:
        writer.close()
