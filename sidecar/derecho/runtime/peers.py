"""The TCP mesh between members: one connection per pair. Members that form a group together
connect higher id to lower; a joiner dials every member ranked before it in the view that
admits it (the old members never dial joiners: they may not know where a joiner listens until
it says so; joiners admitted together are ranked, and the later one dials).

The first frame each way is HELLO (node id, group name, protocol version, peer address); a
connection that sends anything else first, names a node outside the view, or belongs to
another group gets an ERROR frame saying so and is closed, and the member goes on serving
everyone else. A connection whose first frame is JOIN is a joiner asking to be admitted; it is
handed to the sidecar. Frames for a joiner of the current view wait in a queue until it connects.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable

from ..config import parse_address
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
        on_join: Callable[[FramedConnection, dict[str, object]], None] | None = None,
        on_join_lost: Callable[[FramedConnection], None] | None = None,
    ) -> None:
        self.my_node = my_node
        self.group = group
        self.addresses = addresses
        self.max_payload = max_payload
        self.on_peer_frame = on_peer_frame
        self.on_peer_up = on_peer_up
        self.on_peer_down = on_peer_down
        self.on_writes = on_writes
        self.on_join = on_join
        self.on_join_lost = on_join_lost
        # Joiners of the current view that have not connected yet, and what waits for them.
        self._queued: dict[int, list[bytes | memoryview]] = {}
        self.links: dict[int, FramedConnection] = {}
        # Members of the current view: only they may connect; links to others are closed.
        self.members: set[int] = set(addresses)
        self.server: asyncio.AbstractServer | None = None
        self._dialers: list[asyncio.Task[None]] = []
        self.rejected = 0

    @property
    def peers(self) -> list[int]:
        return sorted(n for n in self.members if n != self.my_node)

    def set_members(self, members: tuple[int, ...], joined: Iterable[int] = ()) -> None:
        """A new view: close links to nodes that left it; queue frames for joiners until they connect."""
        self.members = set(members)
        for node in list(self.links):
            if node not in self.members:
                self.links.pop(node).close()
        for node in list(self._queued):
            if node not in self.members:
                del self._queued[node]
        for node in joined:
            if node != self.my_node and node not in self.links:
                self._queued.setdefault(node, [])

    def missing(self) -> list[int]:
        return [n for n in self.peers if n not in self.links]

    async def start(self, dial: Iterable[int] | None = None) -> None:
        """Listen, and dial `dial` (default: the peers with lower ids)."""
        host, port = self.addresses[self.my_node]
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._accepted_connection, host, port, reuse_address=True)
        targets = [n for n in self.peers if n < self.my_node] if dial is None else list(dial)
        for node in targets:
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
        if conn.owner is None and not conn.closed and not getattr(conn, "joining", False):
            self._refuse(conn, f"no HELLO within {HELLO_TIMEOUT:.0f} s")

    async def _dial(self, node: int) -> None:
        """Connect until the peer says HELLO back (a member that has not installed the view
        that lists me yet refuses me: I try again)."""
        host, port = self.addresses[node]
        delay = 0.02
        loop = asyncio.get_running_loop()
        while node not in self.links and node in self.members:
            try:
                transport, conn = await loop.create_connection(lambda: self._new_connection(f"peer {node}"), host, port)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.dialed = loop.create_future()
            conn.write([frames.encode(self._hello())])
            conn.flush_output()
            if await conn.dialed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _hello(self) -> dict[str, object]:
        host, port = self.addresses[self.my_node]
        return {
            "t": T.HELLO,
            "node": self.my_node,
            "group": self.group,
            "proto": PROTOCOL_VERSION,
            "a": f"{host}:{port}",
        }

    def learn(self, node: int, address: object) -> None:
        """A peer's address, from its HELLO or JOIN (ignored if it is not HOST:PORT)."""
        if isinstance(address, str):
            try:
                self.addresses[node] = parse_address(address)
            except ValueError:
                log.warning("node %d sent an unusable address %r", node, address)

    def address_of(self, node: int) -> str | None:
        found = self.addresses.get(node)
        return f"{found[0]}:{found[1]}" if found else None

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
        kind = header.get("t")
        joining = kind == T.JOIN and self.on_join is not None and not getattr(conn, "joining", False)
        if kind != T.HELLO and not joining:
            self._refuse(conn, f"first frame must be HELLO (type {int(T.HELLO)}), got type {kind!r}")
            return
        if header.get("group") != self.group:
            self._refuse(conn, f"group {header.get('group')!r} does not match this member's group {self.group!r}")
            return
        if header.get("proto") != PROTOCOL_VERSION:
            self._refuse(conn, f"protocol version {header.get('proto')!r}; this member speaks {PROTOCOL_VERSION}")
            return
        if joining:
            conn.joining = True
            self.on_join(conn, header)  # type: ignore[misc]
            return
        peer = header.get("node")
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
        self.learn(peer, header.get("a"))
        dialed = getattr(conn, "dialed", None)
        if dialed is not None and not dialed.done():
            dialed.set_result(True)
        queued = self._queued.pop(peer, None)
        if queued:
            conn.write(queued)
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
        dialed = getattr(conn, "dialed", None)
        if dialed is not None and not dialed.done():
            dialed.set_result(False)
        if getattr(conn, "joining", False) and self.on_join_lost is not None:
            self.on_join_lost(conn)
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
            elif node in self._queued:
                self._queued[node].extend(chunks)

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
