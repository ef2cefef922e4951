"""What every multicast engine of a shard shares: membership, sender ranks, my send queue."""

from __future__ import annotations

from collections import deque

from .actions import Msg, ShardKey, TraceContext
from .sst import SST


class ProtocolError(ValueError):
    """A peer sent something the protocol forbids; the link to it is not trustworthy."""


class ShardEngine:
    def __init__(
        self,
        *,
        key: ShardKey,
        vid: int,
        my_node: int,
        members: list[int],
        senders: list[int],
        view_ranks: dict[int, int],
        sst: SST,
        window: int,
        max_inflight_bytes: int,
    ) -> None:
        if not senders:
            raise ValueError(f"shard {key} has no senders")
        if window < 1:
            raise ValueError("window must be at least 1")
        self.key = key
        self.vid = vid
        self.my_node = my_node
        self.members = members
        self.senders = senders
        self.num_senders = len(senders)
        self.my_sender_rank = senders.index(my_node) if my_node in senders else -1
        self.peers = tuple(n for n in members if n != my_node)
        self.sst = sst
        self.member_rows = [view_ranks[n] for n in members]
        self.sender_rows = [view_ranks[n] for n in senders]
        self.window = window
        self.max_inflight_bytes = max_inflight_bytes
        # My messages waiting for the send window.
        self.pending: deque[Msg] = deque()
        self.pending_bytes = 0
        # My messages in this shard are numbered 0, 1, 2, ... across views: (my node, msg_no)
        # identifies a message, so a resend in a later view can be recognised.
        self.next_msg_no = 0
        # Once wedged (a view change began) the engine sends and delivers nothing more in
        # this view; what is left is settled by the ragged trim.
        self.wedged = False
        # Held while a local application reads slowly (see OrderedShard's RELEASED column);
        # raw shards have no delivery order to hold back, so for them it changes nothing.
        self.held = False

    def submit(self, msg: Msg) -> None:
        self._check_sender()
        self.pending.append(msg)
        self.pending_bytes += len(msg.payload)

    def submit_many(self, payloads: list[bytes | memoryview], traces: dict[int, TraceContext] | None = None) -> int:
        """Queue a batch of my messages; returns the msg_no of the first (the rest follow on)."""
        self._check_sender()
        first = self.next_msg_no
        me = self.my_node
        if traces:
            msgs = [Msg(me, first + k, p, traces.get(k)) for k, p in enumerate(payloads)]
        else:
            msgs = [Msg(me, first + k, p) for k, p in enumerate(payloads)]
        self.next_msg_no = first + len(msgs)
        self.pending.extend(msgs)
        self.pending_bytes += sum(map(len, payloads))
        return first

    def hold(self, held: bool) -> None:
        """Stop (or resume) reporting my deliveries as done for the senders' flow control."""
        self.held = held

    def wedge(self) -> None:
        self.wedged = True

    def _check_sender(self) -> None:
        if self.my_sender_rank < 0:
            raise ValueError(f"node {self.my_node} is not a sender in shard {self.key}")

    def sender_rank_of(self, sender: int) -> int:
        """The rank of a peer whose data arrived; a protocol error unless it is another sender."""
        try:
            rank = self.senders.index(sender)
        except ValueError:
            raise ProtocolError(f"node {sender} sent data but is not a sender of shard {self.key}") from None
        if rank == self.my_sender_rank:
            raise ProtocolError(f"node {sender} sent data under my own sender rank")
        return rank
