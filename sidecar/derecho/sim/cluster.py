"""A seeded, deterministic network of protocol cores.

Links are FIFO per ordered pair of members (as TCP is); the scheduler picks, from one seeded
random generator, which member runs next, how many of its waiting frames it takes from which
links (interleaving links arbitrarily), and when applications submit. The same seed always
replays the same run.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from ..core.actions import Deliver, Msg, SendData, SendRow, ShardKey, Stable
from ..core.group import GroupCore
from ..core.view import DeliveryMode, ShardLayout, View


@dataclass
class DataFrame:
    sender: int
    key: ShardKey
    first_index: int
    entries: list[tuple[int, bytes]]


@dataclass
class RowFrame:
    sender: int
    diff: list[int]


Frame = DataFrame | RowFrame


@dataclass
class Delivered:
    key: ShardKey
    vid: int
    seq: int
    sender: int
    msg_no: int
    payload: bytes


@dataclass
class Member:
    node: int
    core: GroupCore
    delivered: dict[ShardKey, list[Delivered]] = field(default_factory=dict)
    submitted: dict[ShardKey, list[int]] = field(default_factory=dict)
    stable_raw: dict[ShardKey, list[int]] = field(default_factory=dict)


@dataclass
class Scenario:
    """What a run does; every field has a default so a seed alone picks a run."""

    members: int = 3
    shards: int = 1
    mode: DeliveryMode = DeliveryMode.ORDERED
    messages: int = 60
    window: int = 8
    max_inflight_bytes: int = 1 << 20
    # Fraction of members that never send (at least one sender always remains).
    quiet_fraction: float = 0.3


class Cluster:
    def __init__(self, seed: int, scenario: Scenario | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.scenario = scenario or Scenario()
        sc = self.scenario
        nodes = list(range(sc.members))
        # Split members into shards round-robin, like a layout function would.
        shard_members = [nodes[i :: sc.shards] for i in range(sc.shards)]
        shard_layouts = []
        for members in shard_members:
            senders = [n for n in members if self.rng.random() >= sc.quiet_fraction] or [members[0]]
            shard_layouts.append(ShardLayout(tuple(members), tuple(senders), sc.mode))
        self.view = View(0, tuple(nodes), (tuple(shard_layouts),))
        self.members = {
            n: Member(
                n, GroupCore(my_node=n, view=self.view, window=sc.window, max_inflight_bytes=sc.max_inflight_bytes)
            )
            for n in nodes
        }
        self.links: dict[tuple[int, int], deque[Frame]] = {(a, b): deque() for a in nodes for b in nodes if a != b}
        self.steps = 0

    # -- driving --------------------------------------------------------------------------

    def _apply(self, member: Member) -> None:
        for action in member.core.flush():
            if isinstance(action, SendData):
                entries = [(m.msg_no, bytes(m.payload)) for m in action.messages]
                for peer in action.to:
                    self.links[(member.node, peer)].append(
                        DataFrame(member.node, action.shard, action.first_index, entries)
                    )
            elif isinstance(action, SendRow):
                for peer in action.to:
                    self.links[(member.node, peer)].append(RowFrame(member.node, list(action.diff)))
            elif isinstance(action, Deliver):
                log = member.delivered.setdefault(action.shard, [])
                for m in action.messages:
                    log.append(Delivered(action.shard, action.vid, m.seq, m.sender, m.msg_no, bytes(m.payload)))
            elif isinstance(action, Stable):
                member.stable_raw.setdefault(action.shard, []).extend(m.msg_no for m in action.messages)

    def _submit(self, member: Member) -> bool:
        senders = [k for k in member.core.shards if member.node in self.view.shard(k).senders]
        if not senders:
            return False
        key = self.rng.choice(senders)
        size = self.rng.choice((0, 1, 10, 100, 3000))
        msg = member.core.submit(key, self.rng.randbytes(size))
        member.submitted.setdefault(key, []).append(msg.msg_no)
        return True

    def _receive(self, member: Member) -> None:
        inbound = [link for link in self.links if link[1] == member.node and self.links[link]]
        if not inbound:
            return
        # Take a random number of frames, interleaving the links at random but FIFO within each.
        for _ in range(self.rng.randint(1, 6)):
            inbound = [link for link in inbound if self.links[link]]
            if not inbound:
                break
            frame = self.links[self.rng.choice(inbound)].popleft()
            if isinstance(frame, DataFrame):
                msgs = [Msg(frame.sender, no, payload) for no, payload in frame.entries]
                member.core.receive_data(frame.sender, frame.key, frame.first_index, msgs)
            else:
                member.core.receive_row(frame.sender, frame.diff)

    def run(self, max_steps: int = 200_000) -> None:
        """Submit the scenario's messages at random moments, then run until quiet."""
        to_send = self.scenario.messages
        nodes = list(self.members)
        while self.steps < max_steps:
            self.steps += 1
            member = self.members[self.rng.choice(nodes)]
            if to_send and self.rng.random() < 0.3:
                for _ in range(self.rng.randint(1, 4)):
                    if to_send and self._submit(member):
                        to_send -= 1
            else:
                self._receive(member)
            self._apply(member)
            if not to_send and self.quiet():
                return
        raise RuntimeError(f"seed {self.seed}: no quiescence after {max_steps} steps")

    def quiet(self) -> bool:
        if any(self.links.values()):
            return False
        # Flush everyone once more: a quiet network with nothing left to do is the end.
        for member in self.members.values():
            self._apply(member)
        return not any(self.links.values())
