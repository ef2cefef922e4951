"""What the protocol core asks its driver to do. The core never performs I/O itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ShardKey = tuple[int, int]
"""(subgroup index, shard index)."""

TraceContext = dict[str, str]
"""W3C trace-context carrier (traceparent, tracestate), propagated untouched."""


class Msg:
    """One application message inside a shard, from submission to delivery.

    `index` is the sender's own counter in the current view; `seq` is the global position
    (index * number_of_senders + sender_rank), set when the message is delivered.
    `msg_no` is the sending node's own counter, stable across views: together with the
    sender's node id it identifies the message.
    """

    __slots__ = ("index", "msg_no", "payload", "sender", "seq", "trace")

    def __init__(
        self,
        sender: int,
        msg_no: int,
        payload: bytes | memoryview,
        trace: TraceContext | None = None,
        index: int = -1,
    ) -> None:
        self.sender = sender
        self.msg_no = msg_no
        self.payload = payload
        self.trace = trace
        self.index = index
        self.seq = -1

    def __repr__(self) -> str:
        return f"Msg(sender={self.sender}, msg_no={self.msg_no}, index={self.index}, seq={self.seq})"


@dataclass(slots=True)
class SendData:
    """Send these messages (consecutive indexes from first_index) to the named peers."""

    shard: ShardKey
    to: tuple[int, ...]
    first_index: int
    messages: list[Msg]
    vid: int = 0


@dataclass(slots=True)
class SendRow:
    """Push my row's changed cells ([column, value, ...]) to the named peers."""

    to: tuple[int, ...]
    diff: list[int]
    vid: int = 0


@dataclass(slots=True)
class Deliver:
    """Hand these messages to the applications, in this order.

    For an ordered shard, version = (vid << 32) | seq. Raw shards deliver with version -1.
    """

    shard: ShardKey
    vid: int
    ordered: bool
    messages: list[Msg]


@dataclass(slots=True)
class Stable:
    """My own raw messages up to msg_no have been received by every member (raw-mode receipts)."""

    shard: ShardKey
    messages: list[Msg]


@dataclass(slots=True)
class Persist:
    """Write `record` durably (and fsync), then call `GroupCore.persisted(token)`."""

    vid: int
    what: str
    record: dict[str, Any]
    token: int


@dataclass(slots=True)
class ViewInstalled:
    """The member moved from view `previous_vid` to `view`; `failed` left the group and
    `joined` came in (they need the state of their shards before they deliver)."""

    view: Any  # core.view.View (not imported here to keep this module dependency-free)
    previous_vid: int
    failed: tuple[int, ...]
    joined: tuple[int, ...] = ()
    # Of `failed`: those that left on purpose, and for the others, who suspected them first
    # (the members whose rows carried the suspicion when this member learned of it).
    left: tuple[int, ...] = ()
    suspected_by: dict[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class Halt:
    """Stop serving; reason says why in words for the operator."""

    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


Action = SendData | SendRow | Deliver | Stable | Persist | ViewInstalled | Halt


def version_of(vid: int, seq: int) -> int:
    return (vid << 32) | seq
