"""Messages in frames: cut a batch of messages into frames of about BATCH_BYTES, and build the
DATA and DELIVER frames that carry them (header, trace contexts, payloads unchanged)."""

from __future__ import annotations

from typing import Any

from ..core.actions import Msg
from ..wire import frames

# Frames carrying a batch of messages are cut at about this many payload bytes, so one huge
# batch neither delays the first message nor needs a huge buffer at the reader.
BATCH_BYTES = 1 << 20


def batch_frame(header: dict[str, Any], batch: list[Msg]) -> list[bytes | memoryview]:
    """A DATA or DELIVER frame: the header, trace contexts of the traced messages, payloads."""
    traces = {pos: m.trace for pos, m in enumerate(batch) if m.trace is not None}
    if traces:
        header["x"] = traces
    return frames.encode_parts(header, [m.payload for m in batch])


def cut(messages: list[Msg]) -> list[tuple[list[Msg], list[int]]]:
    """Split a batch into runs of about BATCH_BYTES of payload (a big message travels alone),
    each with its payload sizes."""
    sizes = [len(m.payload) for m in messages]
    if sum(sizes) <= BATCH_BYTES:
        return [(messages, sizes)]
    runs: list[tuple[list[Msg], list[int]]] = []
    start = 0
    size = 0
    for pos, n in enumerate(sizes):
        if pos > start and size + n > BATCH_BYTES:
            runs.append((messages[start:pos], sizes[start:pos]))
            start = pos
            size = 0
        size += n
    runs.append((messages[start:], sizes[start:]))
    return runs
