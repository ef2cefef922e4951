"""A framed stream connection: decodes frames on the way in, coalesces writes on the way out.

Writes made during one event-loop turn are gathered and leave in one system call when the
owner calls `flush_output()` at the end of the turn (sender-side batching); small pieces are
joined, large payloads go as they are so they are not copied again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ..wire.frames import Frame, FrameDecoder, FrameError

log = logging.getLogger(__name__)

JOIN_BELOW = 256 << 10

FrameHandler = Callable[["FramedConnection", Frame], None]
ErrorHandler = Callable[["FramedConnection", FrameError], None]
CloseHandler = Callable[["FramedConnection", Exception | None], None]


class FramedConnection(asyncio.BufferedProtocol):
    def __init__(
        self,
        *,
        max_payload: int,
        on_frame: FrameHandler,
        on_error: ErrorHandler,
        on_close: CloseHandler,
        on_writes: Callable[[FramedConnection], None],
        on_write_pressure: Callable[[FramedConnection, bool], None] | None = None,
        write_high_water: int | None = None,
        name: str = "",
    ) -> None:
        self.decoder = FrameDecoder(max_payload)
        self.on_frame = on_frame
        self.on_error = on_error
        self.on_close = on_close
        self._on_writes = on_writes
        self._on_write_pressure = on_write_pressure
        self._write_high_water = write_high_water
        # True while the kernel does not take our writes as fast as we make them.
        self.backed_up = False
        self.name = name
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self.closed = False
        self.truncated = False
        self.paused = False
        # Whoever owns the connection may hang its own state here (peer id, client session).
        self.owner: object | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes
        if self._write_high_water is not None:
            self.transport.set_write_buffer_limits(high=self._write_high_water, low=self._write_high_water // 4)

    def pause_writing(self) -> None:
        self.backed_up = True
        if self._on_write_pressure is not None:
            self._on_write_pressure(self, True)

    def resume_writing(self) -> None:
        self.backed_up = False
        if self._on_write_pressure is not None:
            self._on_write_pressure(self, False)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        for item in self.decoder.buffer_updated(nbytes):
            if isinstance(item, Frame):
                self.on_frame(self, item)
            else:
                self.on_error(self, item)
                if item.fatal:
                    self.close()
                    return
            if self.closed:
                return

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.truncated = self.decoder.mid_frame
        self.closed = True
        self.on_close(self, exc)

    # -- output -------------------------------------------------------------------------------

    def write(self, chunks: Iterable[bytes | memoryview]) -> None:
        if self.closed:
            return
        first = not self._out
        for chunk in chunks:
            self._out.append(chunk)
            self._out_bytes += len(chunk)
        if first and self._out:
            self._on_writes(self)

    @property
    def buffered_out(self) -> int:
        """Bytes written but not yet accepted by the kernel."""
        pending = self.transport.get_write_buffer_size() if self.transport else 0
        return pending + self._out_bytes

    def flush_output(self) -> None:
        out = self._out
        if not out or self.transport is None or self.closed:
            self._out = []
            self._out_bytes = 0
            return
        self._out = []
        total = self._out_bytes
        self._out_bytes = 0
        if len(out) == 1:
            self.transport.write(out[0])
        elif total <= JOIN_BELOW:
            self.transport.write(b"".join(out))
        else:
            # Join runs of small chunks; write big ones as they are (no extra copy).
            small: list[bytes | memoryview] = []
            for chunk in out:
                if len(chunk) < JOIN_BELOW:
                    small.append(chunk)
                    continue
                if small:
                    self.transport.write(b"".join(small))
                    small = []
                self.transport.write(chunk)
            if small:
                self.transport.write(b"".join(small))

    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after what was written so far has gone out."""
        if self.closed:
            return
        self.flush_output()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
