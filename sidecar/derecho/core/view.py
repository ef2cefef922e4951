"""A view: the members of the group in rank order, and the subgroup/shard layout over them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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


class InadequateLayout(ValueError):
    """The next view would leave a shard without members or senders."""


def next_view(old: View, survivors: tuple[int, ...], joined: tuple[int, ...]) -> View:
    """The view after `old`: its survivors in rank order, then the joiners.

    Each joiner goes into the smallest shard of every subgroup (the lowest-numbered on a tie)
    as a member and a sender: a deterministic rule, so every member computes the same layout.
    """
    kept = set(survivors)
    subgroups: list[list[ShardLayout]] = []
    for shards in old.subgroups:
        layouts = []
        for layout in shards:
            members = tuple(m for m in layout.members if m in kept)
            senders = tuple(m for m in layout.senders if m in kept)
            layouts.append(ShardLayout(members, senders, layout.mode))
        # Checked before joiners fill in: a shard that lost every member lost its state, and an
        # empty joiner must not stand in for it.
        for sh, layout in enumerate(layouts):
            if not layout.members or not layout.senders:
                gone = [m for m in old.members if m not in kept]
                raise InadequateLayout(
                    f"after removing {gone}, shard {sh} {list(old.subgroups[len(subgroups)][sh].members)} "
                    "has no members or senders left"
                )
        for node in joined:
            target = min(range(len(layouts)), key=lambda i: (len(layouts[i].members), i))
            layout = layouts[target]
            layouts[target] = ShardLayout((*layout.members, node), (*layout.senders, node), layout.mode)
        subgroups.append(layouts)
    return View(old.vid + 1, (*survivors, *joined), tuple(tuple(s) for s in subgroups))


def view_to_dict(view: View) -> dict[str, Any]:
    """A plain form of the view (msgpack/JSON), for joiners and for the saved view."""
    return {
        "vid": view.vid,
        "members": list(view.members),
        "subgroups": [
            [{"members": list(s.members), "senders": list(s.senders), "mode": str(s.mode)} for s in shards]
            for shards in view.subgroups
        ],
    }


def view_from_dict(doc: dict[str, Any]) -> View:
    """The inverse of view_to_dict; raises ValueError (naming the problem) on a malformed one."""
    try:
        subgroups = tuple(
            tuple(
                ShardLayout(
                    tuple(int(m) for m in s["members"]), tuple(int(m) for m in s["senders"]), DeliveryMode(s["mode"])
                )
                for s in shards
            )
            for shards in doc["subgroups"]
        )
        return View(int(doc["vid"]), tuple(int(m) for m in doc["members"]), subgroups)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed view: missing or garbled {exc}") from None
