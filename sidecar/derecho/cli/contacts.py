"""What `derecho restart`, `derecho add` and `derecho up --join` share: finding the running
members a joiner contacts, checking HOST:PORT options, and describing members."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import click

from ..localgroup import LocalGroup, LocalGroupError, LocalMember, query_status, write_config

# A paused (SIGSTOP) member accepts a connection and never answers; this bounds the wait.
STATUS_TIMEOUT = 2.0

MAX_NODE_ID = 2**16 - 1


async def live_contacts(group: LocalGroup, exclude: set[int]) -> list[tuple[LocalMember, dict[str, Any]]]:
    """The members (not in `exclude`) that run, answer, and are in the view they report: the
    ones a joiner can ask to be admitted through. Sorted by node id."""
    candidates = [m for m in group.members if m.node_id not in exclude and m.alive()]
    answers = await asyncio.gather(*(query_status(m, STATUS_TIMEOUT) for m in candidates))
    return [
        (m, status)
        for m, status in zip(candidates, answers, strict=True)
        if status is not None and not status.get("halted") and m.node_id in status["view"]["members"]
    ]


async def join_addresses(group: LocalGroup, exclude: set[int], who: str) -> list[str]:
    """Peer addresses of the live contacts; an error naming `who` if there is none."""
    contacts = await live_contacts(group, exclude)
    if not contacts:
        other = " other" if exclude else ""
        raise LocalGroupError(
            f"no{other} member of the group in {group.directory} is running and answering, so {who} has no "
            f"group to join (a group cannot be restarted from nothing yet); start a new group with "
            f"`derecho up --dir {group.directory}`"
        )
    return [m.address for m, _ in contacts]


def make_joiner(member: LocalMember, contacts: list[str]) -> None:
    """Make a member that is down a joiner through `contacts` when it starts again. A member with
    a saved view rejoins on its own, but one killed in the group's first view never saved one,
    and the members it knew at its start may be gone since: the running ones are the ones to ask."""
    config = tomllib.loads(member.config_path.read_text())
    config.setdefault("membership", {})["join"] = contacts
    write_config(member, config)


def member_line(member: LocalMember) -> str:
    """The line `derecho up` prints for each member (tests parse it)."""
    return f"  member {member.node_id}: socket {member.socket}  http http://{member.http}  pid {member.current_pid()}"


def ids_text(members: list[LocalMember]) -> str:
    """`member 3` or `members 3, 4`."""
    ids = ", ".join(str(m.node_id) for m in members)
    return f"member{'s' if len(members) > 1 else ''} {ids}"


def view_line(status: dict[str, Any]) -> str:
    return f"view {status['view']['vid']}: members {status['view']['members']}"


def check_address(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str]:
    """HOST:PORT, as in the config's `members` (a bracketed IPv6 HOST too)."""
    for value in values:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise click.BadParameter(f"{value!r} is not HOST:PORT (a member's peer address, e.g. 127.0.0.1:24000)")
    return list(values)


def not_ready_hint(member: LocalMember, directory: Path) -> str:
    """What to do about a member still starting when a command gave up waiting for it."""
    pid = member.current_pid()
    if pid is None:
        return ""
    return (
        f"\nmember {member.node_id} is still running (pid {pid}) and may yet be admitted: "
        f"`derecho status --socket {member.socket}` shows it, "
        f"`derecho signal --dir {directory} --member {member.node_id} kill` stops it"
    )
