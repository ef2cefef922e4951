"""Helpers for tests that run real sidecar processes on 127.0.0.1 (fixtures in conftest.py).

DEADLINE bounds every wait for an event (a condition polled, a frame awaited); it is never
an assertion about speed, only how long a hang may last before the test reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from derecho.client import Client
from derecho.localgroup import LocalGroup, LocalMember
from derecho.wire import frames

DEADLINE = 20.0


async def wait_for_condition(check: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    """Poll `check` until it returns True; fail naming `what` if `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def http_address(member: LocalMember) -> str:
    """HOST:PORT of the member's HTTP endpoint, from its status.

    Polled: a member can report ready before its HTTP server is up (its peers connect while it
    is still starting HTTP), so LocalGroup.start() may have recorded `http: None`.
    """
    deadline = time.monotonic() + DEADLINE
    while True:
        async with await Client.connect(member.socket, timeout=DEADLINE) as client:
            member.status = await client.status()
        if member.status.get("http"):
            return member.status["http"]
        if time.monotonic() > deadline:
            raise AssertionError(f"member {member.node_id} reports no HTTP address: {member.status}")
        await asyncio.sleep(0.02)


class Groups:
    """Starts local groups in one test's tmp_path; `close` stops them all."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.groups: list[LocalGroup] = []
        self.clients: list[Client] = []
        # (group directory, node id) -> the exit codes that member may end with instead of 0.
        self.expected_exits: dict[tuple[Path, int], set[int]] = {}

    def create(self, members: int = 3, *, settings: dict[str, Any] | None = None, group: str = "local") -> LocalGroup:
        """A group with its directory laid out but no member started (the test spawns them)."""
        # Short directory names: a Unix socket path must stay under about 100 bytes.
        local = LocalGroup(self.base / f"g{len(self.groups)}", members, group=group, settings=settings)
        self.groups.append(local)
        return local

    async def start(
        self, members: int = 3, *, settings: dict[str, Any] | None = None, group: str = "local"
    ) -> LocalGroup:
        local = self.create(members, settings=settings, group=group)
        await local.start(timeout=DEADLINE)
        return local

    async def connect(self, member: LocalMember) -> Client:
        client = await Client.connect(member.socket, timeout=DEADLINE)
        self.clients.append(client)
        return client

    def expect_exit(self, group: LocalGroup, member: LocalMember, codes: set[int]) -> None:
        """`member` is meant to end with one of `codes` (-9 for a SIGKILL), not with 0."""
        self.expected_exits[(group.directory, member.node_id)] = codes

    async def close(self) -> list[str]:
        """Stop everything; returns a problem per member that did not exit as expected (0 unless
        `expect_exit` said otherwise)."""
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        problems = []
        for local in self.groups:
            codes = await local.stop()
            for member in local.members:
                code = codes[member.node_id]
                allowed = self.expected_exits.get((local.directory, member.node_id), {0})
                if member.process is not None and code not in allowed:
                    problems.append(
                        f"member {member.node_id} of {local.directory} exited with {code} "
                        f"(expected {sorted(allowed)}); log tail:\n"
                        f"{local.tail(member)}"
                    )
        return problems


class Everyone:
    """An app on every member, subscribed from the moment it joins: what the group delivers since."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.streams = [c.deliveries() for c in clients]

    @classmethod
    async def join(cls, groups: Groups, group: LocalGroup) -> Everyone:
        everyone = cls([await groups.connect(m) for m in group.members])
        for c in everyone.clients:
            await c.view()  # answered after the SUBSCRIBE: from here on nothing is missed
        return everyone

    async def deliver(self, sender: int = 0) -> None:
        """A message sent now from member `sender` is the next delivery at every member (so nothing
        else was delivered since they joined), with the version its receipt names."""
        probe = f"probe-{uuid.uuid4()}".encode()
        async with asyncio.timeout(DEADLINE):
            receipt = await self.clients[sender].send(probe)
            for member, stream in enumerate(self.streams):
                got = await anext(stream)
                assert (got.payload, got.sender, got.version) == (probe, sender, receipt.version), f"at {member}"


class RawConnection:
    """A framed stream to a sidecar (its Unix socket or its peer port), without the client library."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = frames.FrameDecoder(1 << 31)
        self.ready: deque[frames.Frame] = deque()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        await self.write(frames.encode(header, payload))

    async def read_frame(self, timeout: float = DEADLINE) -> frames.Frame:
        """The next frame from the sidecar; EOFError if it closed the connection first."""
        async with asyncio.timeout(timeout):
            while not self.ready:
                data = await self.reader.read(1 << 16)
                if not data:
                    raise EOFError("the sidecar closed the connection")
                for item in self.decoder.feed(data):
                    assert isinstance(item, frames.Frame), f"the sidecar sent an unreadable frame: {item.reason}"
                    self.ready.append(item)
        return self.ready.popleft()

    async def read_until_closed(self, timeout: float = DEADLINE) -> list[frames.Frame]:
        """Every frame up to the sidecar closing the connection (fails if it stays open)."""
        got = []
        while True:
            try:
                got.append(await self.read_frame(timeout))
            except (EOFError, ConnectionResetError):
                return got

    async def request(self, header: dict[str, Any], payload: bytes = b"") -> frames.Frame:
        await self.send(header, payload)
        return await self.read_frame()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
