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


class FrameDecoder:
    """Incremental reader: feed it bytes as they arrive, get whole frames and errors back."""

    __slots__ = ("_buf", "_chunks", "_chunks_need", "_header", "_skip", "broken", "max_payload")

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        # A large payload being gathered: its header, its chunks and how many bytes are missing.
        self._header: dict[str, Any] | None = None
        self._chunks: list[bytes] = []
        self._chunks_need = 0
        # Bytes of a refused frame still to be thrown away.
        self._skip = 0
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf) + sum(len(c) for c in self._chunks)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        if self.broken:
            return []
        out: list[Frame | FrameError] = []
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        if self._header is not None:
            n = min(self._chunks_need, len(view))
            if n:
                whole = n == len(data)  # the entire input belongs to the payload: keep it, no copy
                self._chunks.append(data if whole else bytes(view[:n]))
                self._chunks_need -= n
                view = view[n:]
            if self._chunks_need:
                return out
            out.append(Frame(self._header, b"".join(self._chunks)))
            self._header = None
            self._chunks = []
        if view:
            self._buf += view
        self._parse(out)
        return out

    def _parse(self, out: list[Frame | FrameError]) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= PREFIX_SIZE:
            header_len, payload_len = PREFIX.unpack_from(buf, pos)
            if header_len > MAX_HEADER_SIZE or header_len == 0:
                # Without a trustworthy header length there is no next frame to find.
                self.broken = True
                out.append(FrameError(f"frame header length {header_len} is outside 1..{MAX_HEADER_SIZE}", fatal=True))
                buf.clear()
                return
            if end - pos < PREFIX_SIZE + header_len:
                break
            hstart = pos + PREFIX_SIZE
            header, problem = _decode_header(buf, hstart, header_len)
            body = hstart + header_len
            if payload_len > self.max_payload:
                out.append(
                    FrameError(
                        f"payload of {payload_len} bytes exceeds the limit of {self.max_payload} bytes "
                        "(max_message_size); split it or raise the limit",
                        fatal=False,
                        header=header,
                    )
                )
                available = end - body
                if available >= payload_len:
                    pos = body + payload_len
                    continue
                self._skip = payload_len - available
                pos = end
                break
            if end - body >= payload_len:
                pos = body + payload_len
                if problem is not None:
                    out.append(FrameError(problem, fatal=False))
                else:
                    out.append(Frame(header, bytes(buf[body:pos])))  # type: ignore[arg-type]
                continue
            if payload_len >= LARGE_PAYLOAD:
                # Gather the rest as chunks; one join at the end instead of growing the buffer.
                available = bytes(buf[body:end])
                if problem is not None:
                    out.append(FrameError(problem, fatal=False))
                    self._skip = payload_len - len(available)
                else:
                    self._header = header
                    self._chunks = [available] if available else []
                    self._chunks_need = payload_len - len(available)
                pos = end
            break
        if pos:
            del buf[:pos]


def _decode_header(buf: bytearray, start: int, length: int) -> tuple[dict[str, Any], str | None]:
    try:
        header = msgpack.unpackb(memoryview(buf)[start : start + length], raw=False, strict_map_key=False)
    except Exception as exc:
        return {}, f"frame header is not valid msgpack ({type(exc).__name__}: {exc})"
    if not isinstance(header, dict) or "t" not in header:
        return {}, "frame header must be a msgpack map with a type field 't'"
    return header, None
