"""Joins in the protocol core: who may ask, where joiners land in the next view, batching.

The simulator (tests/sim) runs joins under every fault; these pin down the rules themselves.
"""

from __future__ import annotations

import pytest

from derecho.core.actions import SendRow
from derecho.core.group import JOIN_SLOTS, GroupCore
from derecho.core.view import DeliveryMode, InadequateLayout, ShardLayout, View, next_view
from derecho.sim.checkers import check_all
from derecho.sim.cluster import Cluster, Scenario


def test_a_member_of_the_view_cannot_join_again():
    core = GroupCore(my_node=0, view=View.single_shard([0, 1, 2]))
    assert core.request_join(2) == "node 2 is a member of view 0 already"
    assert core.request_join(7) is None
    assert core.request_join(7) is None  # asking twice is one request


def test_the_leader_is_the_lowest_rank_not_suspected():
    core = GroupCore(my_node=1, view=View.single_shard([4, 1, 2]))
    assert core.leader() == 4
    core.suspect(4)
    assert core.leader() == 1


def test_joiners_follow_the_survivors_and_fill_the_smallest_shards():
    old = View(
        3,
        (0, 1, 2, 3, 4),
        (
            (ShardLayout((0, 1, 2), (0, 1)), ShardLayout((3, 4), (3, 4))),
            (ShardLayout((0, 1, 2, 3, 4), (0,), DeliveryMode.RAW),),
        ),
    )
    new = next_view(old, (0, 1, 3, 4), (9, 7))
    assert new.vid == 4 and new.members == (0, 1, 3, 4, 9, 7)
    first, second = new.subgroups[0]
    # Node 2 left shard 0 (now 2 members, tied with shard 1): joiner 9 takes shard 0, 7 shard 1.
    assert first == ShardLayout((0, 1, 9), (0, 1, 9))
    assert second == ShardLayout((3, 4, 7), (3, 4, 7))
    assert new.subgroups[1][0] == ShardLayout((0, 1, 3, 4, 9, 7), (0, 9, 7), DeliveryMode.RAW)


def test_a_view_that_empties_a_shard_is_inadequate():
    old = View(0, (0, 1, 2), ((ShardLayout((0,), (0,)), ShardLayout((1, 2), (1, 2))),))
    with pytest.raises(InadequateLayout, match=r"after removing \[0\], shard 0 \[0\] has no members"):
        next_view(old, (1, 2), ())


def _joined_views(cluster: Cluster) -> list[tuple[int, ...]]:
    members = {0: cluster.view.members} | {rec.vid: rec.members for m in cluster.members.values() for rec in m.views}
    return [tuple(n for n in members[v] if n not in members[v - 1]) for v in sorted(members) if v]


def test_joiners_get_the_state_and_then_the_same_suffix():
    cluster = Cluster(11, Scenario(members=3, joins=2, messages=80, quiet_fraction=0.0, crash_horizon=60))
    cluster.run()
    check_all(cluster)
    joiners = [m for m in cluster.members.values() if m.first_view is not None]
    assert sorted(m.node for m in joiners) == [3, 4]
    logs = {n: [(d.sender, d.msg_no) for d in m.delivered[(0, 0)]] for n, m in cluster.members.items()}
    assert len({tuple(log) for log in logs.values()}) == 1  # every member, joiners too, has one history
    assert all(m.state_from for m in joiners)


def test_joiners_asking_together_are_admitted_in_one_view_change():
    # With many joiners asking at the same step, at least one view change admits several.
    batched = 0
    for seed in range(20):
        cluster = Cluster(seed, Scenario(members=3, joins=JOIN_SLOTS, messages=20, crash_horizon=1))
        cluster.run()
        check_all(cluster)
        batched = max(batched, *(len(j) for j in _joined_views(cluster)))
    assert 2 <= batched <= JOIN_SLOTS


def _exchange(cores: dict[int, GroupCore], rounds: int = 1) -> None:
    """Flush every core and hand its row diffs to the others (no data, no persistence)."""
    for _ in range(rounds):
        for node, core in cores.items():
            for action in core.flush():
                if isinstance(action, SendRow):
                    for peer in action.to:
                        if peer in cores:
                            cores[peer].receive_row(node, action.diff, action.vid)


def test_status_says_what_a_view_change_waits_for():
    view = View.single_shard([0, 1, 2])
    cores = {n: GroupCore(my_node=n, view=view) for n in (0, 1)}  # node 2 is gone
    cores[0].suspect(2)
    proposal = [a for a in cores[0].flush() if isinstance(a, SendRow)]
    assert cores[0].view_change_progress() == (
        "view change (removing [2]) led by member 0: waiting for members [1] to acknowledge proposal 1"
    )
    for action in proposal:
        cores[1].receive_row(0, action.diff, action.vid)
    _exchange(cores, 3)
    # Committed and wedged everywhere; the trim is computed and must be on disk at both.
    assert cores[1].view_change_progress() == (
        "view change (removing [2]) led by member 0: waiting for members [0, 1] to persist the ragged trim of shard 0/0"
    )
    assert cores[0].request_join(5) is None  # a join asked for now waits for the next change
