"""The application side of the sidecar: a Unix socket speaking the client protocol.

Every bad request gets an ERROR frame naming what was wrong and what to do; the connection
(and every other application's) keeps being served unless the stream itself is unreadable.
Each application's unread deliveries are bounded: past `client.max_buffered_bytes` it gets a
SLOW_CONSUMER error and is disconnected, so one slow reader never stalls the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.actions import ShardKey
from ..wire import frames
from ..wire.types import ErrorCode, T
from .connection import FramedConnection

if TYPE_CHECKING:
    from .sidecar import Sidecar

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ClientSession:
    conn: FramedConnection
    number: int
    subscriptions: set[ShardKey] = field(default_factory=set)
    # Messages sent and not yet answered with a receipt.
    outstanding: int = 0
    # Set while the application reads its deliveries slower than they come (its socket
    # buffer is above client.hold_bytes); the loop time at which it fell behind.
    behind_since: float | None = None
    # Whether the application asked to be told of every installed view.
    watch_views: bool = False
    # Shards it subscribed to with replay (a joiner's replay waits for the state to arrive).
    replay: set[ShardKey] = field(default_factory=set)
    # Shards for which it provides snapshots to joiners.
    snapshots: set[ShardKey] = field(default_factory=set)

    def error(self, request: Any, code: ErrorCode, message: str) -> None:
        self.conn.write([frames.encode({"t": T.ERROR, "r": request, "c": int(code), "m": message})])

    def reply(self, request: Any, body: Any) -> None:
        self.conn.write([frames.encode({"t": T.REPLY, "r": request, "b": body})])


class ClientServer:
    def __init__(self, sidecar: Sidecar, path: Path, max_payload: int) -> None:
        self.sidecar = sidecar
        self.path = path
        self.max_payload = max_payload
        self.sessions: set[ClientSession] = set()
        self.server: asyncio.AbstractServer | None = None
        self._numbers = 0
        self.bad_frames = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(self._accepted, str(self.path))
        os.chmod(self.path, 0o660)

    def _accepted(self) -> FramedConnection:
        conn = FramedConnection(
            max_payload=self.max_payload,
            on_frame=self._on_frame,
            on_error=self._on_error,
            on_close=self._on_close,
            on_writes=self.sidecar.connection_wrote,
            on_write_pressure=self._on_write_pressure,
            write_high_water=self.sidecar.config.client.hold_bytes,
            name="client",
        )
        self._numbers += 1
        session = ClientSession(conn, self._numbers)
        conn.owner = session
        self.sessions.add(session)
        return conn

    def _on_write_pressure(self, conn: FramedConnection, backed_up: bool) -> None:
        self.sidecar.reader_pressure(conn.owner, backed_up)  # type: ignore[arg-type]

    def _on_close(self, conn: FramedConnection, exc: Exception | None) -> None:
        session: ClientSession = conn.owner  # type: ignore[assignment]
        self.sessions.discard(session)
        if conn.truncated:
            log.warning("client %d disconnected in the middle of a frame; that frame is dropped", session.number)
        self.sidecar.client_gone(session)

    def _on_error(self, conn: FramedConnection, error: frames.FrameError) -> None:
        session: ClientSession = conn.owner  # type: ignore[assignment]
        self.bad_frames += 1
        request = error.header.get("r") if error.header else None
        if error.payload_size is not None:
            code = ErrorCode.TOO_LARGE
            limit = self.sidecar.config.multicast.max_message_size
            reason = (
                f"a frame of {error.payload_size} bytes is over what one request may carry: messages up to "
                f"max_message_size ({limit} bytes); split the payload or raise multicast.max_message_size"
            )
        else:
            code, reason = ErrorCode.BAD_FRAME, error.reason
        log.warning("client %d sent a bad frame: %s", session.number, reason)
        session.error(request, code, reason)

    def _on_frame(self, conn: FramedConnection, frame: frames.Frame) -> None:
        session: ClientSession = conn.owner  # type: ignore[assignment]
        header = frame.header
        kind = header.get("t")
        request = header.get("r")
        try:
            if kind == T.SEND:
                self.sidecar.client_send(session, header, frame.payload)
            elif kind == T.SUBSCRIBE:
                key = self.sidecar.shard_key(header)
                session.reply(request, {"subgroup": key[0], "shard": key[1]})
                if header.get("p") and key not in session.subscriptions:
                    self.sidecar.transfers.replay(session, key)
                if header.get("snap"):
                    session.snapshots.add(key)
                session.subscriptions.add(key)
            elif kind == T.SNAPSHOT:
                self.sidecar.transfers.snapshot_reply(session, header, frame.payload)
            elif kind == T.VIEW:
                session.reply(request, self.sidecar.view_summary())
            elif kind == T.LEAVE:
                session.reply(request, {"leaving": True, "node_id": self.sidecar.node_id})
                self.sidecar.stop(f"application {session.number} asked this member to leave")
            elif kind == T.WATCH_VIEWS:
                session.watch_views = True
                session.reply(request, self.sidecar.view_history[-1])
            elif kind == T.STATUS:
                session.reply(request, self.sidecar.status())
            else:
                session.error(
                    request, ErrorCode.BAD_REQUEST, f"unknown frame type {kind!r}; this sidecar speaks protocol 1"
                )
        except RequestError as exc:
            session.error(request, exc.code, str(exc))
        except Exception as exc:  # a request we failed to foresee must not cost the connection
            log.exception("client %d: request of type %r failed", session.number, kind)
            session.error(request if _is_request_id(request) else None, ErrorCode.BAD_REQUEST, f"request failed: {exc}")

    async def close(self) -> None:
        for session in list(self.sessions):
            session.error(None, ErrorCode.SHUTTING_DOWN, "the sidecar is shutting down")
            session.conn.close()
        if self.server is not None:
            self.server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _is_request_id(request: Any) -> bool:
    return (
        request is None or type(request) is int or (isinstance(request, list) and all(type(r) is int for r in request))
    )


class RequestError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
