"""A view: the members of the group in rank order, and the subgroup/shard layout over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .actions import ShardKey


class DeliveryMode(StrEnum):
    ORDERED = "ordered"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class ShardLayout:
    members: tuple[int, ...]
    senders: tuple[int, ...]
    mode: DeliveryMode = DeliveryMode.ORDERED


@dataclass(frozen=True, slots=True)
class View:
    vid: int
    members: tuple[int, ...]
    # subgroups[i][j] is shard j of subgroup i.
    subgroups: tuple[tuple[ShardLayout, ...], ...]
    ranks: dict[int, int] = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"view {self.vid} lists a member twice: {list(self.members)}")
        object.__setattr__(self, "ranks", {node: rank for rank, node in enumerate(self.members)})
        for sg, shards in enumerate(self.subgroups):
            seen: set[int] = set()
            for sh, shard in enumerate(shards):
                if not shard.members:
                    raise ValueError(f"subgroup {sg} shard {sh} has no members")
                for node in shard.members:
                    if node not in self.ranks:
                        raise ValueError(f"subgroup {sg} shard {sh} names node {node}, not in the view")
                    if node in seen:
                        raise ValueError(f"node {node} is in two shards of subgroup {sg}")
                    seen.add(node)
                if len(set(shard.senders)) != len(shard.senders):
                    raise ValueError(f"subgroup {sg} shard {sh} lists a sender twice: {list(shard.senders)}")
                for node in shard.senders:
                    if node not in shard.members:
                        raise ValueError(f"subgroup {sg} shard {sh}: sender {node} is not a member of the shard")

    def shard(self, key: ShardKey) -> ShardLayout:
        return self.subgroups[key[0]][key[1]]

    def shards_of(self, node: int) -> list[ShardKey]:
        return [
            (sg, sh)
            for sg, shards in enumerate(self.subgroups)
            for sh, shard in enumerate(shards)
            if node in shard.members
        ]

    @classmethod
    def single_shard(cls, members: list[int], mode: DeliveryMode = DeliveryMode.ORDERED) -> View:
        """One subgroup with one shard holding every member, all of them senders."""
        shard = ShardLayout(tuple(members), tuple(members), mode)
        return cls(0, tuple(members), ((shard,),))
