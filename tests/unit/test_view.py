"""View: member ranks and the subgroup/shard layout, validated at construction."""

from __future__ import annotations

import pytest

from derecho.core.view import DeliveryMode, ShardLayout, View


def test_ranks_follow_member_order():
    view = View(3, (7, 2, 5), ((ShardLayout((7, 2, 5), (7, 2, 5)),),))
    assert view.ranks == {7: 0, 2: 1, 5: 2}
    assert view.shard((0, 0)).members == (7, 2, 5)


def test_single_shard_holds_everyone_as_senders():
    view = View.single_shard([4, 1, 9], DeliveryMode.RAW)
    assert view.vid == 0
    assert view.members == (4, 1, 9)
    (shard,) = view.subgroups[0]
    assert shard == ShardLayout((4, 1, 9), (4, 1, 9), DeliveryMode.RAW)
    assert View.single_shard([1]).shard((0, 0)).mode is DeliveryMode.ORDERED


def test_shards_of_lists_every_shard_a_node_is_in_across_subgroups():
    view = View(
        0,
        (0, 1, 2, 3),
        (
            (ShardLayout((0, 1), (0,)), ShardLayout((2, 3), (2, 3))),
            (ShardLayout((1, 2), (1, 2)),),
        ),
    )
    assert view.shards_of(0) == [(0, 0)]
    assert view.shards_of(1) == [(0, 0), (1, 0)]
    assert view.shards_of(2) == [(0, 1), (1, 0)]
    assert view.shards_of(3) == [(0, 1)]


def test_a_member_may_be_in_no_shard():
    view = View(0, (0, 1, 2), ((ShardLayout((0, 1), (0, 1)),),))
    assert view.shards_of(2) == []


def test_member_listed_twice():
    with pytest.raises(ValueError, match=r"view 1 lists a member twice: \[0, 1, 0\]"):
        View(1, (0, 1, 0), ((ShardLayout((0, 1), (0, 1)),),))


def test_shard_without_members():
    with pytest.raises(ValueError, match="subgroup 0 shard 1 has no members"):
        View(0, (0, 1), ((ShardLayout((0, 1), (0,)), ShardLayout((), ())),))


def test_shard_naming_a_node_outside_the_view():
    with pytest.raises(ValueError, match="subgroup 0 shard 0 names node 5, not in the view"):
        View(0, (0, 1), ((ShardLayout((0, 5), (0,)),),))


def test_node_in_two_shards_of_one_subgroup():
    with pytest.raises(ValueError, match="node 1 is in two shards of subgroup 0"):
        View(0, (0, 1, 2), ((ShardLayout((0, 1), (0,)), ShardLayout((1, 2), (2,))),))


def test_node_listed_twice_in_one_shard():
    with pytest.raises(ValueError, match="node 1"):
        View(0, (0, 1), ((ShardLayout((0, 1, 1), (0,)),),))


def test_sender_that_is_not_a_shard_member():
    with pytest.raises(ValueError, match="subgroup 0 shard 0: sender 2 is not a member of the shard"):
        View(0, (0, 1, 2), ((ShardLayout((0, 1), (0, 2)),),))


def test_sender_listed_twice():
    with pytest.raises(ValueError):
        View(0, (0, 1), ((ShardLayout((0, 1), (0, 0)),),))


def test_views_compare_by_content_not_by_rank_cache():
    a = View.single_shard([0, 1])
    b = View.single_shard([0, 1])
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.vid = 2  # type: ignore[misc]
