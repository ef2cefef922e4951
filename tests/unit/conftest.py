"""A hand-driven network of GroupCore instances for the unit tests.

Nothing moves unless a test says so: `flush(node)` runs that member's rules and queues its
sends on FIFO links (one per ordered pair of members, as TCP gives), and `pump(src, dst)`
hands the queued frames to the receiver. Messages are copied on the way, as a real transport
would, so a receiver never shares a Msg object with its sender.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest

from derecho.core.actions import Action, Deliver, Msg, SendData, SendRow, ShardKey, Stable
from derecho.core.group import GroupCore
from derecho.core.view import DeliveryMode, ShardLayout, View

KEY: ShardKey = (0, 0)


@dataclass
class DataFrame:
    sender: int
    key: ShardKey
    first_index: int
    messages: list[tuple[int, bytes]]


@dataclass
class RowFrame:
    sender: int
    diff: list[int]


class Net:
    def __init__(self, view: View, **core_args: int) -> None:
        self.view = view
        self.cores = {n: GroupCore(my_node=n, view=view, **core_args) for n in view.members}
        self.links: dict[tuple[int, int], deque[DataFrame | RowFrame]] = {
            (a, b): deque() for a in view.members for b in view.members if a != b
        }
        self.actions: dict[int, list[Action]] = {n: [] for n in view.members}

    # -- driving ------------------------------------------------------------------------------

    def submit(self, node: int, *payloads: bytes, key: ShardKey = KEY) -> list[Msg]:
        return [self.cores[node].submit(key, p) for p in payloads]

    def flush(self, node: int) -> list[Action]:
        actions = self.cores[node].flush()
        for action in actions:
            if isinstance(action, SendData):
                entries = [(m.msg_no, bytes(m.payload)) for m in action.messages]
                for peer in action.to:
                    self.links[(node, peer)].append(DataFrame(node, action.shard, action.first_index, entries))
            elif isinstance(action, SendRow):
                for peer in action.to:
                    self.links[(node, peer)].append(RowFrame(node, list(action.diff)))
        self.actions[node].extend(actions)
        return actions

    def flush_all(self) -> dict[int, list[Action]]:
        return {n: self.flush(n) for n in self.view.members}

    def pump(self, src: int, dst: int, frames: int | None = None) -> int:
        """Hand up to `frames` (default: all) queued frames from src to dst; returns how many."""
        link = self.links[(src, dst)]
        count = 0
        while link and (frames is None or count < frames):
            frame = link.popleft()
            core = self.cores[dst]
            if isinstance(frame, DataFrame):
                msgs = [Msg(frame.sender, no, payload) for no, payload in frame.messages]
                core.receive_data(frame.sender, frame.key, frame.first_index, msgs)
            else:
                core.receive_row(frame.sender, frame.diff)
            count += 1
        return count

    def pump_all(self) -> int:
        return sum(self.pump(a, b) for (a, b) in list(self.links))

    def settle(self, max_rounds: int = 10_000) -> int:
        """Flush everyone and pump every link until nothing moves; returns the rounds taken."""
        for rounds in range(1, max_rounds + 1):
            flushed = self.flush_all()
            moved = self.pump_all()
            if not moved and not any(flushed.values()):
                return rounds
        raise AssertionError(f"no quiescence after {max_rounds} rounds")

    # -- what happened --------------------------------------------------------------------------

    def delivers(self, node: int, key: ShardKey = KEY) -> list[Deliver]:
        return [a for a in self.actions[node] if isinstance(a, Deliver) and a.shard == key]

    def delivered(self, node: int, key: ShardKey = KEY) -> list[tuple[int, int, int]]:
        """(sender node, msg_no, seq) of every message node delivered in the shard, in order."""
        return [(m.sender, m.msg_no, m.seq) for d in self.delivers(node, key) for m in d.messages]

    def payloads(self, node: int, key: ShardKey = KEY) -> list[bytes]:
        return [bytes(m.payload) for d in self.delivers(node, key) for m in d.messages]

    def stable(self, node: int, key: ShardKey = KEY) -> list[int]:
        return [m.msg_no for a in self.actions[node] if isinstance(a, Stable) and a.shard == key for m in a.messages]

    def sends(self, node: int) -> list[SendData]:
        return [a for a in self.actions[node] if isinstance(a, SendData)]


def shard_view(
    members: list[int],
    senders: list[int] | None = None,
    mode: DeliveryMode = DeliveryMode.ORDERED,
    vid: int = 0,
) -> View:
    layout = ShardLayout(tuple(members), tuple(members if senders is None else senders), mode)
    return View(vid, tuple(members), ((layout,),))


@pytest.fixture
def make_net():
    """make_net(members, senders=None, mode=ORDERED, vid=0, **core_args) for one shard, or make_net(view)."""

    def make(
        members: list[int] | View,
        senders: list[int] | None = None,
        mode: DeliveryMode = DeliveryMode.ORDERED,
        vid: int = 0,
        **core_args: int,
    ) -> Net:
        view = members if isinstance(members, View) else shard_view(members, senders, mode, vid)
        return Net(view, **core_args)

    return make
