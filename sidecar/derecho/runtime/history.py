"""What a member delivered in each ordered shard, kept in memory: the state a joiner receives
and what an application gets first when it subscribes with replay.

Each delivered batch is kept compact: its sizes, seqs and senders in arrays, and small
payloads joined into one bytes object. That is about one object the garbage collector tracks
per batch, not two per message: a history of millions of small messages would otherwise make
every full collection take seconds and stall the group. Large payloads are kept as they came
(no copy: copying into fresh memory costs about as much as receiving them); there are few of
them, so they cost the collector little. The oldest batches are dropped past `limit`;
`first_version` then says where the history starts, and `complete` that it does not start at
the beginning.

A member that joined with an application snapshot keeps it as `base`: its history is that
snapshot (the state as of base's version) followed by the batches delivered since.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from ..core.actions import Msg
from ..wire.frames import encode_header

# What keeping one message costs beside its payload: three array entries.
PER_MESSAGE = 20
# What keeping one batch costs: the record, the bytes and array objects.
PER_BATCH = 400
# Frames built from the history are cut at about this many payload bytes.
FRAME_BYTES = 1 << 20
# Batches whose messages average less than this are joined into one bytes object.
JOIN_BELOW = 16 << 10


@dataclass(slots=True)
class Batch:
    """Messages delivered together in one view: their payloads (one joined bytes object, or
    one part per message), then parallel arrays."""

    vid: int
    parts: tuple[bytes | memoryview, ...]
    sizes: array
    seqs: array
    senders: array

    @classmethod
    def of(cls, vid: int, messages: list[Msg]) -> Batch:
        payloads = [m.payload for m in messages]
        sizes = array("Q", [len(p) for p in payloads])
        nbytes = sum(sizes)
        parts = tuple(payloads) if nbytes >= JOIN_BELOW * len(payloads) else (b"".join(payloads),)
        return cls(vid, parts, sizes, array("q", [m.seq for m in messages]), array("q", [m.sender for m in messages]))

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return len(self.seqs)

    def versions(self, start: int = 0, end: int | None = None) -> list[int]:
        base = self.vid << 32
        return [base | q for q in self.seqs[start:end]]

    def runs(self) -> Iterator[tuple[int, int, list[bytes | memoryview]]]:
        """(start, end, payload chunks) of about FRAME_BYTES (a large message goes alone)."""
        ends = list(accumulate(self.sizes))
        joined = len(self.parts) == 1 and len(ends) != 1
        view = memoryview(self.parts[0]) if joined else None
        start = offset = 0
        for pos, end in enumerate(ends):
            if pos > start and end - offset > FRAME_BYTES:
                yield start, pos, self._chunks(view, start, pos, offset, ends[pos - 1])
                start, offset = pos, ends[pos - 1]
        if start < len(ends):
            yield start, len(ends), self._chunks(view, start, len(ends), offset, ends[-1])

    def frames(self, header: dict[str, Any], seqs: bool = False) -> Iterator[tuple[int, int, list[bytes | memoryview]]]:
        """Frames of about FRAME_BYTES carrying this batch: `header` plus versions `v`, senders
        `s`, sizes `n` (and seqs `q` if asked), the kept payloads written as they are (no
        joining copy). Yields (messages, payload bytes, frame chunks)."""
        for start, end, chunks in self.runs():
            part = {**header, "v": self.versions(start, end), "s": self.senders[start:end].tolist()}
            part["n"] = self.sizes[start:end].tolist()
            if seqs:
                part["q"] = self.seqs[start:end].tolist()
            nbytes = sum(len(c) for c in chunks)
            yield end - start, nbytes, [encode_header(part, nbytes), *chunks]

    def _chunks(
        self, view: memoryview | None, start: int, end: int, offset: int, stop: int
    ) -> list[bytes | memoryview]:
        return [view[offset:stop]] if view is not None else list(self.parts[start:end])


class ShardHistory:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batches: deque[Batch] = deque()
        self.nbytes = 0  # payload bytes kept
        self.memory = 0  # what `limit` bounds: payloads plus PER_MESSAGE and PER_BATCH
        self.count = 0
        # False once anything was dropped (or a joiner's state arrived incomplete).
        self.complete = True
        # (version, snapshot) an application took, which the batches continue from.
        self.base: tuple[int, bytes] | None = None

    def append(self, vid: int, messages: list[Msg]) -> None:
        if messages:
            self.add(Batch.of(vid, messages))

    def add(self, batch: Batch) -> None:
        self.batches.append(batch)
        self.nbytes += batch.nbytes
        self.memory += _cost(batch)
        self.count += len(batch)
        while self.memory > self.limit and len(self.batches) > 1:
            dropped = self.batches.popleft()
            self.nbytes -= dropped.nbytes
            self.memory -= _cost(dropped)
            self.count -= len(dropped)
            self.complete = False
            # The snapshot no longer joins up with what is kept: without it nothing is missing
            # in the middle, only at the start (which `complete` says).
            self.base = None

    @property
    def first_version(self) -> int:
        if not self.batches:
            return -1
        first = self.batches[0]
        return (first.vid << 32) | first.seqs[0]

    @property
    def last_version(self) -> int:
        """The version of the last message kept (or of the base snapshot), -1 if none."""
        if self.batches:
            last = self.batches[-1]
            return (last.vid << 32) | last.seqs[-1]
        return self.base[0] if self.base is not None else -1

    def __iter__(self) -> Iterator[Batch]:
        return iter(list(self.batches))


def _cost(batch: Batch) -> int:
    return batch.nbytes + PER_MESSAGE * len(batch) + PER_BATCH
