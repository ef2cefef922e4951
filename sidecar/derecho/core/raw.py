"""Unordered ("raw") multicast in one shard: per-sender FIFO, delivered on receipt.

No global order and no versions: a message is handed to the applications as soon as it
arrives. Each member counts, per sender, how many of that sender's messages it has received;
a sender's window and its receipts ("received by every member") follow the minimum of those
counts over the shard.
"""

from __future__ import annotations

from collections import deque

from .actions import Deliver, Msg, SendData, ShardKey, Stable, TraceContext
from .ordered import ProtocolError
from .sst import SST

SENT = 0


def raw_columns(num_senders: int) -> int:
    return 1 + num_senders


class RawShard:
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
        base_column: int,
        window: int,
        max_inflight_bytes: int,
    ) -> None:
        if not senders:
            raise ValueError(f"shard {key} has no senders")
        self.key = key
        self.vid = vid
        self.my_node = my_node
        self.members = members
        self.senders = senders
        self.my_sender_rank = senders.index(my_node) if my_node in senders else -1
        self.peers = tuple(n for n in members if n != my_node)
        self.sst = sst
        self.col_sent = base_column + SENT
        self.col_received_from = [base_column + 1 + k for k in range(len(senders))]
        self.member_rows = [view_ranks[n] for n in members]
        self.window = window
        self.max_inflight_bytes = max_inflight_bytes
        self.pending: deque[Msg] = deque()
        self.pending_bytes = 0
        # My messages in this shard are numbered 0, 1, 2, ... across views: (my node, msg_no)
        # identifies a message, so a resend in a later view can be recognised.
        self.next_msg_no = 0
        # My sent messages not yet received everywhere, for receipts and the window.
        self.unacked: deque[Msg] = deque()
        self.unacked_bytes = 0
        self.received = [0] * len(senders)
        self.out: list[SendData | Deliver | Stable] = []

    def submit(self, msg: Msg) -> None:
        if self.my_sender_rank < 0:
            raise ValueError(f"node {self.my_node} is not a sender in shard {self.key}")
        self.pending.append(msg)
        self.pending_bytes += len(msg.payload)

    def submit_many(self, payloads: list[bytes | memoryview], traces: dict[int, TraceContext] | None = None) -> int:
        """Queue a batch of my messages; returns the msg_no of the first (the rest follow on)."""
        if self.my_sender_rank < 0:
            raise ValueError(f"node {self.my_node} is not a sender in shard {self.key}")
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

    def receive(self, sender: int, first_index: int, messages: list[Msg]) -> None:
        try:
            rank = self.senders.index(sender)
        except ValueError:
            raise ProtocolError(f"node {sender} sent data but is not a sender of shard {self.key}") from None
        if rank == self.my_sender_rank:
            raise ProtocolError(f"node {sender} sent data under my own sender rank")
        if first_index != self.received[rank]:
            raise ProtocolError(
                f"node {sender} sent index {first_index} in raw shard {self.key}; expected {self.received[rank]}"
            )
        for offset, msg in enumerate(messages):
            msg.index = msg.seq = first_index + offset
        self.received[rank] = first_index + len(messages)
        self.sst.set(self.col_received_from[rank], self.received[rank])
        if messages:
            self.out.append(Deliver(self.key, self.vid, False, messages))

    def flush(self) -> None:
        if self.my_sender_rank < 0:
            return
        # With no peers every send is at once received everywhere, freeing the window again.
        while self._acknowledge() and self._send_pending() and not self.peers:
            pass

    def _acknowledge(self) -> bool:
        rows = self.sst.rows
        col = self.col_received_from[self.my_sender_rank]
        everywhere = min(rows[r][col] for r in self.member_rows)
        stable: list[Msg] = []
        unacked = self.unacked
        while unacked and unacked[0].index < everywhere:
            msg = unacked.popleft()
            self.unacked_bytes -= len(msg.payload)
            stable.append(msg)
        if stable:
            self.out.append(Stable(self.key, stable))
        return True

    def _send_pending(self) -> bool:
        pending = self.pending
        if not pending:
            return False
        index = self.sst.own[self.col_sent]
        first_index = index
        batch: list[Msg] = []
        while pending:
            size = len(pending[0].payload)
            if len(self.unacked) >= self.window:
                break
            if self.unacked and self.unacked_bytes + size > self.max_inflight_bytes:
                break
            msg = pending.popleft()
            msg.index = msg.seq = index
            index += 1
            self.pending_bytes -= size
            self.unacked.append(msg)
            self.unacked_bytes += size
            batch.append(msg)
        if not batch:
            return False
        self.sst.set(self.col_sent, index)
        my_rank = self.my_sender_rank
        self.received[my_rank] = index
        self.sst.set(self.col_received_from[my_rank], index)
        if self.peers:
            self.out.append(SendData(self.key, self.peers, first_index, batch))
        # A raw message is delivered locally as soon as it is sent.
        self.out.append(Deliver(self.key, self.vid, False, list(batch)))
        return True

    def frontiers(self) -> dict[str, int]:
        return {
            "sent": self.sst.own[self.col_sent],
            "received": sum(self.received),
            "pending": len(self.pending),
            "inflight": len(self.unacked),
        }
