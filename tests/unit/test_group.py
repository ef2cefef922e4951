"""GroupCore: construction, shard routing, the SST layout shared by all members, and the
ProtocolErrors a misbehaving peer must get instead of silently corrupting state."""

from __future__ import annotations

import pytest

from derecho.core.actions import Deliver, Msg, SendData, SendRow
from derecho.core.group import JOIN_SLOTS, GroupCore, UnknownShardError
from derecho.core.ordered import ORDERED_COLUMNS, SENT, ProtocolError
from derecho.core.view import DeliveryMode, ShardLayout, View

KEY = (0, 0)


def two_subgroups() -> View:
    # Subgroup 0: ordered shards {0, 1} and {2, 3}; subgroup 1: one raw shard over 1, 2, 3 (senders 1, 3).
    return View(
        4,
        (0, 1, 2, 3),
        (
            (ShardLayout((0, 1), (0, 1)), ShardLayout((2, 3), (2, 3))),
            (ShardLayout((1, 2, 3), (1, 3), DeliveryMode.RAW),),
        ),
    )


def test_core_for_a_node_outside_the_view_is_refused():
    with pytest.raises(ValueError, match="node 9 is not a member of view 0"):
        GroupCore(my_node=9, view=View.single_shard([0, 1]))


def test_every_member_lays_out_columns_for_every_shard():
    view = two_subgroups()
    cores = [GroupCore(my_node=n, view=view) for n in view.members]
    # 2 ordered shards x 4 columns + raw shard with 2 senders (1 + 2 columns), then membership
    # columns (suspected, proposed and left per member, 4 counters, trim and trim-ready per shard,
    # the join slots).
    members, shards = len(view.members), 3
    assert {c.sst.columns for c in cores} == {2 * ORDERED_COLUMNS + 3 + 3 * members + 4 + 2 * shards + JOIN_SLOTS}
    assert set(cores[0].shards) == {(0, 0)}
    assert set(cores[1].shards) == {(0, 0), (1, 0)}
    assert set(cores[2].shards) == {(0, 1), (1, 0)}
    # The second ordered shard's columns start after the first's, the raw shard's after those.
    assert cores[2].shards[(0, 1)].col_sent == ORDERED_COLUMNS
    assert cores[2].shards[(1, 0)].col_sent == 2 * ORDERED_COLUMNS


def test_shards_are_independent_and_rows_go_to_every_view_member(make_net):
    net = make_net(two_subgroups())
    net.submit(0, b"a0", key=(0, 0))
    net.submit(2, b"c0", key=(0, 1))
    net.submit(1, b"r0", key=(1, 0))
    actions = net.flush(1)
    (data,) = [a for a in actions if isinstance(a, SendData)]
    assert data.shard == (1, 0) and data.to == (2, 3)
    (row,) = [a for a in actions if isinstance(a, SendRow)]
    assert row.to == (0, 2, 3)  # the row is the whole view's table, shared by all members
    net.settle()
    assert net.payloads(0, (0, 0)) == net.payloads(1, (0, 0)) == [b"a0"]
    assert net.payloads(2, (0, 1)) == net.payloads(3, (0, 1)) == [b"c0"]
    assert net.payloads(1, (1, 0)) == net.payloads(2, (1, 0)) == net.payloads(3, (1, 0)) == [b"r0"]
    assert net.delivers(0, (1, 0)) == [] and net.delivers(0, (0, 1)) == []


def test_msg_no_counts_up_from_zero():
    core = GroupCore(my_node=1, view=two_subgroups())
    assert [core.submit((0, 0), b"x").msg_no for _ in range(3)] == [0, 1, 2]


def test_submit_to_a_shard_i_am_not_in():
    core = GroupCore(my_node=0, view=two_subgroups())
    with pytest.raises(UnknownShardError, match="node 0 is not a member of subgroup 1 shard 0"):
        core.submit((1, 0), b"x")
    with pytest.raises(UnknownShardError):
        core.submit((5, 5), b"x")
    assert core.submit((0, 0), b"x").msg_no == 0  # a refused submit uses no msg_no


def test_trace_context_travels_with_the_local_message():
    core = GroupCore(my_node=0, view=View.single_shard([0]))
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    msg = core.submit(KEY, b"x", trace)
    (deliver,) = core.flush()
    assert isinstance(deliver, Deliver)
    assert deliver.messages == [msg]
    assert deliver.messages[0].trace is trace


def test_flush_with_nothing_to_do_is_empty():
    core = GroupCore(my_node=0, view=View.single_shard([0, 1, 2]))
    assert core.flush() == []
    assert core.flush() == []


def test_status_reports_frontiers_per_shard(make_net):
    net = make_net([0, 1])
    net.submit(0, b"a")
    net.settle()
    status = net.cores[1].status()
    assert status["vid"] == 0
    assert status["members"] == [0, 1]
    assert status["shards"] == {
        "0/0": {
            # Node 1 (sender rank 1) needed no null: seq 1 is its index 0, still unused.
            "sent": 0,
            "received": 1,
            "delivered": 1,
            "stable": 1,
            "delivered_everywhere": 1,
            "released": 1,
            "pending": 0,
            "inflight": 0,
        }
    }


# -- protocol errors ---------------------------------------------------------------------------


def ordered_core(node: int = 0) -> GroupCore:
    view = View(0, (0, 1, 2, 3), ((ShardLayout((0, 1, 2), (0, 1)),),))
    return GroupCore(my_node=node, view=view)


def msgs(sender: int, *numbers: int) -> list[Msg]:
    return [Msg(sender, n, b"p") for n in numbers]


def test_data_from_a_member_that_is_not_a_sender():
    core = ordered_core()
    with pytest.raises(ProtocolError, match="node 2 sent data but is not a sender of shard"):
        core.receive_data(2, KEY, 0, msgs(2, 0))


def test_data_from_a_node_outside_the_view():
    core = ordered_core()
    with pytest.raises(ProtocolError, match="node 9 sent data but is not a sender"):
        core.receive_data(9, KEY, 0, msgs(9, 0))


def test_data_under_my_own_sender_rank():
    core = ordered_core()
    with pytest.raises(ProtocolError, match="under my own sender rank"):
        core.receive_data(0, KEY, 0, msgs(0, 0))


def test_data_for_a_shard_i_am_not_in():
    core = ordered_core(node=3)
    with pytest.raises(ProtocolError, match="node 1 sent data for subgroup 0 shard 0, which I am not in"):
        core.receive_data(1, KEY, 0, msgs(1, 0))


@pytest.mark.parametrize("first_index", [0, 1])
def test_replayed_indexes_are_refused(first_index):
    core = ordered_core()
    core.receive_data(1, KEY, 0, msgs(1, 0, 1))
    with pytest.raises(ProtocolError, match=rf"node 1 re-sent index {first_index} .* expected >= 2"):
        core.receive_data(1, KEY, first_index, msgs(1, 5))


def test_gaps_in_ordered_data_are_allowed_because_nulls_fill_them():
    core = ordered_core()
    core.receive_data(1, KEY, 0, msgs(1, 0))
    core.receive_data(1, KEY, 3, msgs(1, 1))  # indexes 1 and 2 were nulls
    with pytest.raises(ProtocolError, match="re-sent index 2"):
        core.receive_data(1, KEY, 2, msgs(1, 2))


def test_data_for_an_index_already_announced_as_null_is_refused():
    view = View.single_shard([0, 1])
    core = GroupCore(my_node=0, view=view)
    # Node 1 says it used indexes 0..2 and has received up to seq 6: with no data, those were nulls.
    core.receive_row(1, [SENT, 3, 1, 6])
    core.flush()
    assert core.shards[KEY].frontiers()["delivered"] == 6
    try:
        core.receive_data(1, KEY, 1, msgs(1, 0))
    except ProtocolError:
        return
    # Accepted: show what follows when node 1 goes on correctly with index 3 (seq 7).
    core.receive_data(1, KEY, 3, msgs(1, 1))
    core.receive_row(1, [SENT, 4, 1, 8])
    delivered = [(m.msg_no, m.seq) for a in core.flush() if isinstance(a, Deliver) for m in a.messages]
    pytest.fail(f"late data for index 1 accepted; then delivered (msg_no, seq) = {delivered}, expected [(1, 7)]")


def test_row_diff_with_an_unknown_column():
    core = ordered_core()
    columns = core.sst.columns
    expected = f"row update from node 1: row diff names column {columns}; this table has {columns}"
    with pytest.raises(ProtocolError, match=expected):
        core.receive_row(1, [columns, 1])


def test_row_from_a_node_outside_the_view():
    core = ordered_core()
    with pytest.raises(ProtocolError, match="row update from node 7, not a peer in view 0"):
        core.receive_row(7, [0, 1])


def test_row_claiming_to_be_mine():
    core = ordered_core()
    with pytest.raises(ProtocolError, match="row update from node 0"):
        core.receive_row(0, [0, 1])


def test_row_from_a_view_member_outside_the_shard_is_merged_harmlessly():
    core = ordered_core()
    core.receive_row(3, [0, 1])  # node 3 has no shard; its row is still part of the table
    assert core.sst.rows[3][0] == 1
    assert core.flush() == []
