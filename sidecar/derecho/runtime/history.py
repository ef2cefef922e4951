"""What a member delivered in each ordered shard, kept in memory: the state a joiner receives
and what an application gets first when it subscribes with replay.

Batches are kept as the core delivered them (the messages' payloads are views of the frames
they came in, not copies), so keeping history costs a list append per delivered batch. The
oldest batches are dropped past `limit` bytes; `first_version` then says where it starts, so
a joiner or a replaying application knows the history is not complete.

A member that joined with an application snapshot keeps it as `base`: its history is that
snapshot (the state as of base's version) followed by the batches delivered since.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..core.actions import Msg

# What keeping one message costs beside its payload (its Msg, the view of its payload, the list
# slot), measured with tracemalloc: counted against the limit so that many tiny messages cannot
# use several times `limit` of memory.
PER_MESSAGE = 400


class ShardHistory:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batches: deque[tuple[int, list[Msg], int]] = deque()  # (vid, messages, payload bytes)
        self.nbytes = 0  # payload bytes kept
        self.memory = 0  # payload bytes plus PER_MESSAGE each: what `limit` bounds
        self.count = 0
        # False once anything was dropped (or a joiner's state arrived incomplete).
        self.complete = True
        # (version, snapshot) an application took, which the batches continue from.
        self.base: tuple[int, bytes] | None = None

    def append(self, vid: int, messages: list[Msg], nbytes: int) -> None:
        self.batches.append((vid, messages, nbytes))
        self.nbytes += nbytes
        self.memory += nbytes + PER_MESSAGE * len(messages)
        self.count += len(messages)
        while self.memory > self.limit and len(self.batches) > 1:
            _, dropped, size = self.batches.popleft()
            self.nbytes -= size
            self.memory -= size + PER_MESSAGE * len(dropped)
            self.count -= len(dropped)
            self.complete = False
            # The snapshot no longer joins up with what is kept: without it nothing is missing
            # in the middle, only at the start (which `complete` says).
            self.base = None

    @property
    def first_version(self) -> int:
        if not self.batches:
            return -1
        vid, messages, _ = self.batches[0]
        return (vid << 32) | messages[0].seq

    @property
    def last_version(self) -> int:
        """The version of the last message kept (or of the base snapshot), -1 if none."""
        if self.batches:
            vid, messages, _ = self.batches[-1]
            return (vid << 32) | messages[-1].seq
        return self.base[0] if self.base is not None else -1

    def __iter__(self) -> Iterator[tuple[int, list[Msg], int]]:
        return iter(list(self.batches))
