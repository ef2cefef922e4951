"""Totally ordered multicast in one shard (Derecho's ORDERED mode), as a pure state machine.

Each sender numbers its messages 0, 1, 2, ... in the view; message (index i, sender rank r)
has the global sequence number seq = i * S + r, so the order is round-robin over senders and
needs no sequencer. Three counters per member live in the SST:

- SENT: how many indexes this member has used as a sender (real messages and nulls).
- RECEIVED: the first global seq this member has not received (every seq below it is here).
- DELIVERED: how many seqs this member has delivered.
- RELEASED: how far senders may count this member as done for flow control: DELIVERED,
  except while the driver holds it back because a local application reads slowly. That
  couples the senders' window to the applications' pace, so buffers stay bounded; the
  driver bounds how long a hold may last (a reader that stays behind is cut off).

A message is stable when every member's RECEIVED is past it, and stable messages are
delivered in seq order, all that are ready at once (receiver-side batching). An idle sender
raises SENT with null messages (no payload, no delivery) as soon as another sender gets
ahead, so nobody waits for it and no timer is needed.

Data and row updates travel on the same FIFO link from each sender, data first; so when a
sender's row says SENT = k, every real message it numbered below k has already arrived and
any index below k with no data is a null.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .actions import Deliver, Msg, SendData
from .shard import ProtocolError, ShardEngine

__all__ = ["ORDERED_COLUMNS", "OrderedShard", "ProtocolError"]

SENT, RECEIVED, DELIVERED, RELEASED = 0, 1, 2, 3
ORDERED_COLUMNS = 4


class OrderedShard(ShardEngine):
    def __init__(self, *, base_column: int, **common: Any) -> None:
        super().__init__(**common)
        self.col_sent = base_column + SENT
        self.col_received = base_column + RECEIVED
        self.col_delivered = base_column + DELIVERED
        self.col_released = base_column + RELEASED
        # Undelivered messages of each sender, in index order (my own included).
        self.queues: list[deque[Msg]] = [deque() for _ in self.senders]
        # Next index each sender's data may start at (nulls may leave gaps).
        self.data_next = [0] * self.num_senders
        # My numbered messages not yet delivered everywhere: (index, size).
        self.inflight: deque[tuple[int, int]] = deque()
        self.inflight_bytes = 0
        self.out: list[SendData | Deliver] = []

    # -- events ---------------------------------------------------------------------------

    def receive(self, sender: int, first_index: int, messages: list[Msg]) -> None:
        """Data from a peer: its messages numbered first_index, first_index + 1, ..."""
        rank = self.sender_rank_of(sender)
        announced = self.sst.rows[self.sender_rows[rank]][self.col_sent]
        if first_index < announced:
            # Its row already said index first_index was used; data must come before the row.
            raise ProtocolError(
                f"node {sender} sent data for index {first_index} in shard {self.key} after announcing "
                f"{announced} indexes; data must precede the row update"
            )
        if first_index < self.data_next[rank]:
            raise ProtocolError(
                f"node {sender} re-sent index {first_index} in shard {self.key}; expected >= {self.data_next[rank]}"
            )
        queue = self.queues[rank]
        index = first_index
        for msg in messages:
            msg.index = index
            queue.append(msg)
            index += 1
        self.data_next[rank] = index

    # -- the predicates, evaluated once per batch of events --------------------------------

    def flush(self) -> None:
        """Run every rule that the events since the last flush enabled; actions go to self.out."""
        if self.wedged:
            return
        sst = self.sst
        rows = sst.rows
        while True:
            self._release_window(min(rows[r][self.col_released] for r in self.member_rows))
            sent_any = self._send_pending()
            self._send_nulls()
            self._update_received()
            delivered_any = self._deliver(min(rows[r][self.col_received] for r in self.member_rows))
            if not self.held:
                sst.set(self.col_released, sst.own[self.col_delivered])
            if not (self.pending and (sent_any or delivered_any)):
                return

    def _release_window(self, delivered_everywhere: int) -> None:
        inflight = self.inflight
        num_senders, my_rank = self.num_senders, self.my_sender_rank
        while inflight and inflight[0][0] * num_senders + my_rank < delivered_everywhere:
            self.inflight_bytes -= inflight.popleft()[1]

    def _send_pending(self) -> bool:
        pending = self.pending
        if not pending:
            return False
        sst = self.sst
        index = sst.own[self.col_sent]
        first_index = index
        inflight = self.inflight
        batch: list[Msg] = []
        own_queue = self.queues[self.my_sender_rank]
        window, max_bytes = self.window, self.max_inflight_bytes
        while pending:
            size = len(pending[0].payload)
            if len(inflight) >= window:
                break
            if inflight and self.inflight_bytes + size > max_bytes:
                break
            msg = pending.popleft()
            msg.index = index
            index += 1
            inflight.append((msg.index, size))
            self.inflight_bytes += size
            self.pending_bytes -= size
            own_queue.append(msg)
            batch.append(msg)
        if not batch:
            return False
        sst.set(self.col_sent, index)
        if self.peers:
            self.out.append(SendData(self.key, self.peers, first_index, batch, self.vid))
        return True

    def _send_nulls(self) -> None:
        my_rank = self.my_sender_rank
        if my_rank < 0:
            return
        rows = self.sst.rows
        col = self.col_sent
        needed = 0
        for rank, row_index in enumerate(self.sender_rows):
            if rank == my_rank:
                continue
            count = rows[row_index][col]
            # To deliver sender r's last message (index count-1, seq (count-1)*S + r) I must have
            # used every index of mine whose seq is smaller.
            want = count if my_rank < rank else count - 1
            if want > needed:
                needed = want
        if needed > self.sst.own[col]:
            self.sst.set(col, needed)

    def _update_received(self) -> None:
        rows = self.sst.rows
        col = self.col_sent
        num_senders = self.num_senders
        first_missing = min(rows[r][col] * num_senders + rank for rank, r in enumerate(self.sender_rows))
        self.sst.set(self.col_received, first_missing)

    def _deliver(self, stable: int) -> bool:
        sst = self.sst
        seq = sst.own[self.col_delivered]
        if stable <= seq:
            return False
        num_senders = self.num_senders
        queues = self.queues
        batch: list[Msg] = []
        append = batch.append
        # Walk the seqs in round-robin order; a seq whose sender has no message there is a null.
        rank, index = seq % num_senders, seq // num_senders
        while seq < stable:
            queue = queues[rank]
            if queue and queue[0].index == index:
                msg = queue.popleft()
                msg.seq = seq
                append(msg)
            seq += 1
            rank += 1
            if rank == num_senders:
                rank = 0
                index += 1
        sst.set(self.col_delivered, stable)
        if batch:
            self.out.append(Deliver(self.key, self.vid, True, batch))
        return True

    # -- view change --------------------------------------------------------------------------

    def received(self) -> int:
        return self.sst.own[self.col_received]

    def apply_trim(self, trim: int) -> None:
        """Deliver every message below the ragged trim (all survivors have them)."""
        self._deliver(trim)

    def undelivered_own(self) -> list[Msg]:
        """My messages not delivered in this view, in order: they go again in the next one."""
        own = list(self.queues[self.my_sender_rank]) if self.my_sender_rank >= 0 else []
        return own + list(self.pending)

    # -- introspection ----------------------------------------------------------------------

    def frontiers(self) -> dict[str, int]:
        own = self.sst.own
        rows = self.sst.rows
        return {
            "sent": own[self.col_sent],
            "received": own[self.col_received],
            "delivered": own[self.col_delivered],
            "stable": min(rows[r][self.col_received] for r in self.member_rows),
            "delivered_everywhere": min(rows[r][self.col_delivered] for r in self.member_rows),
            "released": own[self.col_released],
            "pending": len(self.pending),
            "inflight": len(self.inflight),
        }
