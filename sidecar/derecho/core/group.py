"""The protocol core of one member: its view, its SST, and a multicast engine per shard.

Events go in through the methods; `flush()` runs every rule they enabled and returns the
actions for the driver (send, deliver, ...). Nothing here touches a socket, a clock or a file,
so the simulator and the runtime run exactly the same code.
"""

from __future__ import annotations

from .actions import Action, Msg, SendRow, ShardKey, TraceContext
from .ordered import ORDERED_COLUMNS, OrderedShard, ProtocolError
from .raw import RawShard, raw_columns
from .sst import SST
from .view import DeliveryMode, View

Shard = OrderedShard | RawShard


class UnknownShardError(KeyError):
    pass


class GroupCore:
    def __init__(
        self,
        *,
        my_node: int,
        view: View,
        window: int = 1024,
        max_inflight_bytes: int = 64 << 20,
    ) -> None:
        if my_node not in view.ranks:
            raise ValueError(f"node {my_node} is not a member of view {view.vid}")
        self.my_node = my_node
        self.view = view
        self.shards: dict[ShardKey, Shard] = {}
        # Every shard of every subgroup gets its columns, so all members agree on the layout.
        column = 0
        bases: dict[ShardKey, int] = {}
        for sg, shards in enumerate(view.subgroups):
            for sh, layout in enumerate(shards):
                bases[(sg, sh)] = column
                if layout.mode is DeliveryMode.ORDERED:
                    column += ORDERED_COLUMNS
                else:
                    column += raw_columns(len(layout.senders))
        self.sst = SST(len(view.members), column, view.ranks[my_node])
        self.peers = tuple(n for n in view.members if n != my_node)
        for key in view.shards_of(my_node):
            layout = view.shard(key)
            engine = OrderedShard if layout.mode is DeliveryMode.ORDERED else RawShard
            self.shards[key] = engine(
                key=key,
                vid=view.vid,
                my_node=my_node,
                members=list(layout.members),
                senders=list(layout.senders),
                view_ranks=view.ranks,
                sst=self.sst,
                base_column=bases[key],
                window=window,
                max_inflight_bytes=max_inflight_bytes,
            )

    def _shard(self, key: ShardKey) -> Shard:
        try:
            return self.shards[key]
        except KeyError:
            raise UnknownShardError(
                f"node {self.my_node} is not a member of subgroup {key[0]} shard {key[1]}"
            ) from None

    # -- events -----------------------------------------------------------------------------

    def submit(self, key: ShardKey, payload: bytes | memoryview, trace: TraceContext | None = None) -> Msg:
        """A local application's message; returns it so the driver can match the delivery."""
        shard = self._shard(key)
        msg = Msg(self.my_node, shard.next_msg_no, payload, trace)
        shard.submit(msg)
        shard.next_msg_no += 1
        return msg

    def submit_batch(
        self, key: ShardKey, payloads: list[bytes | memoryview], traces: dict[int, TraceContext] | None = None
    ) -> int:
        """Many local messages at once; returns the first msg_no (the others follow in order)."""
        return self._shard(key).submit_many(payloads, traces)

    def receive_data(self, sender: int, key: ShardKey, first_index: int, messages: list[Msg]) -> None:
        if key not in self.shards:
            raise ProtocolError(f"node {sender} sent data for subgroup {key[0]} shard {key[1]}, which I am not in")
        self.shards[key].receive(sender, first_index, messages)

    def receive_row(self, sender: int, diff: list[int]) -> None:
        rank = self.view.ranks.get(sender)
        if rank is None:
            raise ProtocolError(f"row update from node {sender}, not a member of view {self.view.vid}")
        try:
            self.sst.merge(rank, diff)
        except ValueError as exc:
            raise ProtocolError(f"row update from node {sender}: {exc}") from None

    # -- rules ------------------------------------------------------------------------------

    def flush(self) -> list[Action]:
        actions: list[Action] = []
        for shard in self.shards.values():
            shard.flush()
            if shard.out:
                actions.extend(shard.out)
                shard.out.clear()
        diff = self.sst.take_diff()
        if diff is not None and self.peers:
            actions.append(SendRow(self.peers, diff))
        return actions

    def pending_bytes(self) -> int:
        return sum(shard.pending_bytes for shard in self.shards.values())

    def status(self) -> dict[str, object]:
        return {
            "vid": self.view.vid,
            "members": list(self.view.members),
            "shards": {f"{k[0]}/{k[1]}": s.frontiers() for k, s in self.shards.items()},
        }
