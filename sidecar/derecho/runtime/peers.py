"""The TCP mesh between members: one connection per pair, opened by the member with the higher id.

The first frame each way is HELLO (node id, group name, protocol version); a connection that
sends anything else first, names a node outside the view, or belongs to another group gets an
ERROR frame saying so and is closed, and the member goes on serving everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from ..wire import frames
from ..wire.types import PROTOCOL_VERSION, ErrorCode, T
from .connection import FramedConnection

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0


class PeerMesh:
    def __init__(
        self,
        *,
        my_node: int,
        group: str,
        addresses: dict[int, tuple[str, int]],
        max_payload: int,
        on_peer_frame: Callable[[int, frames.Frame], None],
        on_peer_up: Callable[[int], None],
        on_peer_down: Callable[[int, str], None],
        on_writes: Callable[[FramedConnection], None],
    ) -> None:
        self.my_node = my_node
        self.group = group
        self.addresses = addresses
        self.max_payload = max_payload
        self.on_peer_frame = on_peer_frame
        self.on_peer_up = on_peer_up
        self.on_peer_down = on_peer_down
        self.on_writes = on_writes
        self.links: dict[int, FramedConnection] = {}
        # Members of the current view: only they may connect; links to others are closed.
        self.members: set[int] = set(addresses)
        self.server: asyncio.AbstractServer | None = None
        self._dialers: list[asyncio.Task[None]] = []
        self.rejected = 0

    @property
    def peers(self) -> list[int]:
        return sorted(n for n in self.members if n != self.my_node)

    def set_members(self, members: tuple[int, ...]) -> None:
        """A new view: close links to nodes that left it."""
        self.members = set(members)
        for node in list(self.links):
            if node not in self.members:
                self.links.pop(node).close()

    def missing(self) -> list[int]:
        return [n for n in self.peers if n not in self.links]

    async def start(self) -> None:
        host, port = self.addresses[self.my_node]
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accepted_connection, host, port, reuse_address=True)
        for node in self.peers:
            if node < self.my_node:
                self._dialers.append(asyncio.create_task(self._dial(node)))

    def _new_connection(self, name: str) -> FramedConnection:
        conn = FramedConnection(
            max_payload=self.max_payload,
            on_frame=self._on_frame,
            on_error=self._on_error,
            on_close=self._on_close,
            on_writes=self.on_writes,
            name=name,
        )
        conn.owner = None  # the peer's node id once HELLO has been exchanged
        return conn

    def _accepted_connection(self) -> FramedConnection:
        conn = self._new_connection("inbound peer")
        asyncio.get_running_loop().call_later(HELLO_TIMEOUT, self._hello_deadline, conn)
        return conn

    def _hello_deadline(self, conn: FramedConnection) -> None:
        if conn.owner is None and not conn.closed:
            self._refuse(conn, f"no HELLO within {HELLO_TIMEOUT:.0f} s")

    async def _dial(self, node: int) -> None:
        host, port = self.addresses[node]
        delay = 0.02
        loop = asyncio.get_running_loop()
        while node not in self.links:
            try:
                transport, conn = await loop.create_connection(lambda: self._new_connection(f"peer {node}"), host, port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.write([frames.encode(self._hello())])
            conn.flush_output()
            return

    def _hello(self) -> dict[str, object]:
        return {"t": T.HELLO, "node": self.my_node, "group": self.group, "proto": PROTOCOL_VERSION}

    def _refuse(self, conn: FramedConnection, reason: str) -> None:
        self.rejected += 1
        log.warning("refused a peer connection: %s", reason)
        conn.write([frames.encode({"t": T.ERROR, "r": None, "c": ErrorCode.BAD_REQUEST, "m": reason})])
        conn.close()

    def _on_frame(self, conn: FramedConnection, frame: frames.Frame) -> None:
        node = conn.owner
        if node is not None:
            self.on_peer_frame(node, frame)  # type: ignore[arg-type]
            return
        header = frame.header
        if header.get("t") == T.ERROR:
            log.error("peer refused our connection: %s", header.get("m"))
            conn.close()
            return
        if header.get("t") != T.HELLO:
            self._refuse(conn, f"first frame must be HELLO (type {int(T.HELLO)}), got type {header.get('t')!r}")
            return
        peer = header.get("node")
        if header.get("group") != self.group:
            self._refuse(conn, f"group {header.get('group')!r} does not match this member's group {self.group!r}")
            return
        if header.get("proto") != PROTOCOL_VERSION:
            self._refuse(conn, f"protocol version {header.get('proto')!r}; this member speaks {PROTOCOL_VERSION}")
            return
        if not isinstance(peer, int) or peer not in self.members or peer == self.my_node:
            self._refuse(conn, f"node {peer!r} is not a peer in this group's view")
            return
        if peer in self.links:
            self._refuse(conn, f"node {peer} is already connected")
            return
        inbound = conn.name == "inbound peer"
        if inbound:
            conn.write([frames.encode(self._hello())])
            conn.name = f"peer {peer}"
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.owner = peer
        self.links[peer] = conn
        log.info("connected to peer %d", peer)
        self.on_peer_up(peer)

    def _on_error(self, conn: FramedConnection, error: frames.FrameError) -> None:
        who = conn.name
        if conn.owner is None:
            self._refuse(conn, f"bad frame before HELLO: {error.reason}")
            return
        # An established peer that sends a bad frame cannot be trusted to keep the order.
        log.error("%s sent a bad frame, closing the link: %s", who, error.reason)
        conn.write([frames.encode({"t": T.ERROR, "r": None, "c": ErrorCode.BAD_FRAME, "m": error.reason})])
        conn.close()

    def _on_close(self, conn: FramedConnection, exc: Exception | None) -> None:
        node = conn.owner
        if node is None or self.links.get(node) is not conn:  # type: ignore[arg-type]
            return
        del self.links[node]  # type: ignore[arg-type]
        reason = f"connection lost ({exc})" if exc else "connection closed"
        if conn.truncated:
            reason += ", mid-frame"
        self.on_peer_down(node, reason)  # type: ignore[arg-type]

    def send(self, nodes: tuple[int, ...], chunks: list[bytes | memoryview]) -> None:
        links = self.links
        for node in nodes:
            link = links.get(node)
            if link is not None:
                link.write(chunks)

    def drop(self, node: int, reason: str) -> None:
        conn = self.links.get(node)
        if conn is not None:
            log.error("dropping link to peer %d: %s", node, reason)
            conn.write([frames.encode({"t": T.ERROR, "r": None, "c": ErrorCode.BAD_FRAME, "m": reason})])
            conn.close()

    async def close(self) -> None:
        for task in self._dialers:
            task.cancel()
        for conn in list(self.links.values()):
            conn.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
