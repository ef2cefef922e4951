"""Length-prefixed frames: an 8-byte prefix, a small msgpack header, then the raw payload.

    +----------------+-----------------+------------------+---------------------+
    | header_len u32 | payload_len u32 | header (msgpack) | payload (raw bytes) |
    +----------------+-----------------+------------------+---------------------+

The payload is never re-encoded: a batch of messages is their payloads back to back, with
their sizes in the header. Because both lengths come first, a reader can refuse an oversized
or malformed frame, skip exactly its bytes, and go on reading the next one: one bad frame
costs that frame, not the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

PREFIX = struct.Struct(">II")
PREFIX_SIZE = PREFIX.size
MAX_HEADER_SIZE = 4 << 20
# Payloads at least this big are gathered as chunks and joined once, not grown in a buffer.
LARGE_PAYLOAD = 64 << 10

_packer = msgpack.Packer(use_bin_type=True)


def encode_header(header: dict[str, Any], payload_size: int = 0) -> bytes:
    """The prefix and the header; the caller writes the payload after it, unchanged."""
    packed = _packer.pack(header)
    return PREFIX.pack(len(packed), payload_size) + packed


def encode(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    return encode_header(header, len(payload)) + payload


def encode_parts(header: dict[str, Any], payloads: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """Chunks that, written in order, form one frame whose payload is the payloads joined.

    Several payloads are joined into one chunk (a single C-level copy, cheaper than handing
    the transport many small pieces); a lone payload is passed through untouched.
    """
    if len(payloads) == 1:
        body = payloads[0]
        return [encode_header(header, len(body)), body]
    body = b"".join(payloads)
    return [encode_header(header, len(body)), body]


@dataclass(slots=True)
class Frame:
    header: dict[str, Any]
    payload: bytes


@dataclass(slots=True)
class FrameError:
    """A frame the reader refused. `fatal` means the stream can no longer be read."""

    reason: str
    fatal: bool
    header: dict[str, Any] | None = None
    # Set when the frame was refused for its size: how big its payload said it was.
    payload_size: int | None = None


class FrameDecoder:
    """Incremental reader, shaped for asyncio.BufferedProtocol: the socket reads straight
    into `get_buffer()` and `buffer_updated(n)` returns the frames and errors completed.

    Small frames are read into a staging buffer and copied out once. A large payload is
    read directly into a buffer of its own size, allocated when its header arrives, so it
    is never copied in user space (`large_as_bytes` trades one copy for a `bytes` object).
    `feed(data)` serves callers that already hold the bytes.
    """

    __slots__ = (
        "_end",
        "_large",
        "_large_as_bytes",
        "_large_fill",
        "_large_header",
        "_skip",
        "_stage",
        "_start",
        "_view",
        "broken",
        "max_payload",
    )

    def __init__(self, max_payload: int, *, stage_size: int = 256 << 10, large_as_bytes: bool = False) -> None:
        self.max_payload = max_payload
        self._stage = bytearray(stage_size)
        self._view = memoryview(self._stage)
        self._start = 0  # first byte not yet parsed
        self._end = 0  # end of the bytes read into the stage
        self._large: bytearray | None = None
        self._large_fill = 0
        self._large_header: dict[str, Any] = {}
        self._large_as_bytes = large_as_bytes
        # Bytes of a refused frame still to be thrown away.
        self._skip = 0
        self.broken = False

    @property
    def buffered(self) -> int:
        """Bytes read but not yet returned as part of a frame."""
        return self._end - self._start + (self._large_fill if self._large is not None else 0)

    @property
    def mid_frame(self) -> bool:
        """Whether part of a frame has been read (a disconnect now truncates it)."""
        return self._large is not None or self._end > self._start or self._skip > 0

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._large is not None:
            return memoryview(self._large)[self._large_fill :]
        if self._end == len(self._stage):
            self._make_room()
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        if self.broken:
            return out
        large = self._large
        if large is not None:
            self._large_fill += nbytes
            if self._large_fill == len(large):
                out.append(Frame(self._large_header, bytes(large) if self._large_as_bytes else large))  # type: ignore[arg-type]
                self._large = None
            return out
        self._end += nbytes
        self._parse(out)
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        view = memoryview(data)
        while view and not self.broken:
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            view = view[n:]
            out.extend(self.buffer_updated(n))
        return out

    def _make_room(self) -> None:
        start, end = self._start, self._end
        if start:
            self._stage[: end - start] = self._view[start:end]
            self._start, self._end = 0, end - start
        if self._end == len(self._stage):
            # One frame's header plus small payload is bigger than the stage: grow it.
            bigger = bytearray(2 * len(self._stage))
            bigger[: self._end] = self._view[: self._end]
            self._view.release()
            self._stage = bigger
            self._view = memoryview(bigger)

    def _parse(self, out: list[Frame | FrameError]) -> None:
        view = self._view
        pos, end = self._start, self._end
        while True:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                if self._skip:
                    break
            if end - pos < PREFIX_SIZE:
                break
            header_len, payload_len = PREFIX.unpack_from(view, pos)
            if header_len > MAX_HEADER_SIZE or header_len == 0:
                # Without a trustworthy header length there is no next frame to find.
                self.broken = True
                out.append(FrameError(f"frame header length {header_len} is outside 1..{MAX_HEADER_SIZE}", fatal=True))
                pos = end
                break
            body = pos + PREFIX_SIZE + header_len
            if end < body:
                break
            header, problem = _decode_header(view[pos + PREFIX_SIZE : body])
            available = end - body
            if payload_len > self.max_payload:
                out.append(
                    FrameError(
                        f"payload of {payload_len} bytes exceeds the limit of {self.max_payload} bytes "
                        "(max_message_size); split it or raise the limit",
                        fatal=False,
                        header=header,
                        payload_size=payload_len,
                    )
                )
                self._skip = payload_len
                pos = body
                continue
            if available >= payload_len:
                if problem is not None:
                    out.append(FrameError(problem, fatal=False))
                else:
                    out.append(Frame(header, bytes(view[body : body + payload_len])))
                pos = body + payload_len
                continue
            if payload_len >= LARGE_PAYLOAD:
                if problem is not None:
                    out.append(FrameError(problem, fatal=False))
                    self._skip = payload_len
                    pos = body
                    continue
                # Read the rest straight into the payload's own buffer.
                large = bytearray(payload_len)
                large[:available] = view[body:end]
                self._large = large
                self._large_fill = available
                self._large_header = header
                pos = end
            break
        if pos == end:
            self._start = self._end = 0
        else:
            self._start = pos


def _decode_header(raw: memoryview) -> tuple[dict[str, Any], str | None]:
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        detail = f": {exc}" if str(exc) else ""
        return {}, f"frame header is not valid msgpack ({type(exc).__name__}{detail})"
    if not isinstance(header, dict) or "t" not in header:
        return {}, "frame header must be a msgpack map with a type field 't'"
    return header, None
