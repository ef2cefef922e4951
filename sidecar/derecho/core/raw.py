"""Unordered ("raw") multicast in one shard: per-sender FIFO, delivered on receipt.

No global order and no versions: a message is handed to the applications as soon as it
arrives. Each member counts, per sender, how many of that sender's messages it has received;
a sender's window and its receipts ("received by every member") follow the minimum of those
counts over the shard.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .actions import Deliver, Msg, SendData, Stable
from .shard import ProtocolError, ShardEngine

SENT = 0


def raw_columns(num_senders: int) -> int:
    return 1 + num_senders


class RawShard(ShardEngine):
    def __init__(self, *, base_column: int, **common: Any) -> None:
        super().__init__(**common)
        self.col_sent = base_column + SENT
        self.col_received_from = [base_column + 1 + k for k in range(self.num_senders)]
        # My sent messages not yet received everywhere, for receipts and the window.
        self.unacked: deque[Msg] = deque()
        self.unacked_bytes = 0
        self.received = [0] * self.num_senders
        # Highest msg_no delivered per sender node, kept across views to drop re-sends.
        self.last_msg_no: dict[int, int] = {}
        self.out: list[SendData | Deliver | Stable] = []

    def receive(self, sender: int, first_index: int, messages: list[Msg]) -> None:
        rank = self.sender_rank_of(sender)
        if first_index != self.received[rank]:
            raise ProtocolError(
                f"node {sender} sent index {first_index} in raw shard {self.key}; expected {self.received[rank]}"
            )
        for offset, msg in enumerate(messages):
            msg.index = msg.seq = first_index + offset
        self.received[rank] = first_index + len(messages)
        if self.wedged:
            return
        self.sst.set(self.col_received_from[rank], self.received[rank])
        # A message re-sent after a view change may have reached me in the old view already.
        last = self.last_msg_no.get(sender, -1)
        if messages and messages[0].msg_no <= last:
            messages = [m for m in messages if m.msg_no > last]
        if messages:
            self.last_msg_no[sender] = messages[-1].msg_no
            self.out.append(Deliver(self.key, self.vid, False, messages))

    def flush(self) -> None:
        if self.my_sender_rank < 0 or self.wedged:
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
            self.out.append(SendData(self.key, self.peers, first_index, batch, self.vid))
        # A raw message is delivered locally as soon as it is sent (once: not again on a re-send).
        last = self.last_msg_no.get(self.my_node, -1)
        local = [m for m in batch if m.msg_no > last]
        if local:
            self.last_msg_no[self.my_node] = local[-1].msg_no
            self.out.append(Deliver(self.key, self.vid, False, local))
        return True

    def undelivered_own(self) -> list[Msg]:
        """My messages not known to be everywhere: they go again in the next view."""
        return list(self.unacked) + list(self.pending)

    def frontiers(self) -> dict[str, int]:
        return {
            "sent": self.sst.own[self.col_sent],
            "received": sum(self.received),
            "pending": len(self.pending),
            "inflight": len(self.unacked),
        }
