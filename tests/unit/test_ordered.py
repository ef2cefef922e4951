"""ORDERED mode, one rule at a time, with every event scripted by hand (see conftest.Net).

Columns of a single ordered shard start at 0: SENT (indexes used), RECEIVED (first seq not
received), DELIVERED (seqs delivered).
"""

from __future__ import annotations

import pytest

from derecho.core.actions import Deliver, SendData, SendRow, version_of
from derecho.core.ordered import DELIVERED, RECEIVED, SENT


def kinds(actions):
    return [type(a).__name__ for a in actions]


def row_value(actions, column):
    """The value a SendRow in these actions gives `column`, or None if no diff names it."""
    for a in actions:
        if isinstance(a, SendRow):
            pairs = dict(zip(a.diff[::2], a.diff[1::2], strict=True))
            if column in pairs:
                return pairs[column]
    return None


# -- numbering ---------------------------------------------------------------------------------


def test_global_seq_is_index_times_senders_plus_sender_rank(make_net):
    net = make_net([0, 1, 2])
    for node in (0, 1, 2):
        net.submit(node, b"a", b"b")
    net.settle()
    # Round robin: (index 0: ranks 0, 1, 2), (index 1: ranks 0, 1, 2); msg_no = index here.
    expected = [(sender, index, index * 3 + rank) for index in range(2) for rank, sender in enumerate((0, 1, 2))]
    for node in (0, 1, 2):
        assert net.delivered(node) == expected


def test_sender_rank_is_position_among_senders_not_view_rank_or_node_id(make_net):
    # Node 3 is sender rank 0 and node 1 sender rank 1; nodes 0 and 2 only receive.
    net = make_net([0, 1, 2, 3], senders=[3, 1])
    net.submit(3, b"x0", b"x1")
    net.submit(1, b"y0", b"y1")
    net.settle()
    expected = [(3, 0, 0), (1, 0, 1), (3, 1, 2), (1, 1, 3)]
    for node in (0, 1, 2, 3):
        assert net.delivered(node) == expected
        assert [m.index for d in net.delivers(node) for m in d.messages] == [0, 0, 1, 1]


def test_version_is_vid_in_the_high_bits_and_seq_in_the_low_bits(make_net):
    net = make_net([0, 1], vid=7)
    net.submit(0, b"a", b"b")
    net.submit(1, b"c")
    net.settle()
    for node in (0, 1):
        delivers = net.delivers(node)
        assert all(d.vid == 7 and d.ordered for d in delivers)
        versions = [version_of(d.vid, m.seq) for d in delivers for m in d.messages]
        assert versions == [(7 << 32) | seq for seq in (0, 1, 2)]
        assert versions == sorted(set(versions))


def test_version_of_orders_views_before_seqs():
    assert version_of(0, 5) == 5
    assert version_of(1, 0) == 1 << 32
    assert version_of(3, 9) == (3 << 32) + 9
    assert version_of(1, 0) > version_of(0, (1 << 32) - 1)


# -- nulls -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize(
    ("me", "other"),
    [(0, 1), (2, 1), (1, 0), (2, 0), (0, 2), (1, 2)],
)
def test_idle_sender_emits_exactly_the_nulls_the_rule_asks(make_net, me, other, count):
    """Having received `count` indexes from sender `other`, my next index must be >= count if
    my rank is lower (my index count-1 comes before theirs), else >= count - 1."""
    net = make_net([0, 1, 2])
    net.submit(other, *[b"m"] * count)
    net.flush(other)
    net.pump(other, me)
    actions = net.flush(me)
    expected = count if me < other else count - 1
    assert net.cores[me].sst.own[SENT] == expected
    # Nulls carry no data: only my row goes out.
    assert not any(isinstance(a, SendData) for a in actions)
    assert not any(isinstance(a, Deliver) for a in actions)
    assert row_value(actions, SENT) == (expected or None)


def test_nulls_let_a_lone_sender_deliver_and_take_seq_slots_without_deliveries(make_net):
    net = make_net([0, 1, 2])
    net.submit(1, b"a", b"b", b"c")
    net.settle()
    # Sender rank 1 used indexes 0..2 (seqs 1, 4, 7); rank 0 needed nulls 0..2, rank 2 nulls 0..1.
    assert [net.cores[n].sst.own[SENT] for n in (0, 1, 2)] == [3, 3, 2]
    for node in (0, 1, 2):
        assert net.delivered(node) == [(1, 0, 1), (1, 1, 4), (1, 2, 7)]
        front = net.cores[node].shards[(0, 0)].frontiers()
        # Seq 8 (rank 2, index 2) is the first one nobody has; nulls below it count as delivered.
        assert front["received"] == 8
        assert front["delivered"] == 8
        assert front["stable"] == 8
        assert front["delivered_everywhere"] == 8
        assert front["pending"] == front["inflight"] == 0


def test_no_null_ping_pong_once_idle(make_net):
    net = make_net([0, 1, 2])
    net.submit(2, b"z")
    net.settle()
    sent = [net.cores[n].sst.own[SENT] for n in (0, 1, 2)]
    # Rank 2 sent index 0; ranks 0 and 1 each needed exactly one null, and nobody needs more.
    assert sent == [1, 1, 1]
    for _ in range(5):
        assert net.flush_all() == {0: [], 1: [], 2: []}
        assert net.pump_all() == 0
    assert [net.cores[n].sst.own[SENT] for n in (0, 1, 2)] == sent


def test_a_null_does_not_trigger_further_nulls(make_net):
    # Rank 0 sends; rank 1 and rank 2 are behind it in the round, so neither needs a null,
    # and seeing each other's rows must not make them emit any.
    net = make_net([0, 1, 2])
    net.submit(0, b"a", b"b")
    rounds = net.settle()
    assert [net.cores[n].sst.own[SENT] for n in (0, 1, 2)] == [2, 1, 1]
    assert rounds <= 5
    # Only node 0 ever sent data.
    assert [len(net.sends(n)) for n in (0, 1, 2)] == [1, 0, 0]


def test_non_sender_never_emits_nulls(make_net):
    net = make_net([0, 1, 2], senders=[0, 1])
    net.submit(1, b"a", b"b")
    net.settle()
    assert net.cores[2].sst.own[SENT] == 0
    assert all(row_value([a], SENT) is None for a in net.actions[2])
    assert net.cores[0].sst.own[SENT] == 2
    for node in (0, 1, 2):
        assert net.delivered(node) == [(1, 0, 1), (1, 1, 3)]


# -- stability ---------------------------------------------------------------------------------


def test_delivery_waits_until_every_member_received_past_the_message(make_net):
    net = make_net([0, 1, 2])
    net.submit(0, b"m")
    actions = net.flush(0)
    assert kinds(actions) == ["SendData", "SendRow"]
    assert row_value(actions, SENT) == 1
    assert row_value(actions, RECEIVED) == 1

    net.pump(0, 1)
    assert kinds(net.flush(1)) == ["SendRow"]  # RECEIVED=1, but node 2 has not said so
    net.pump(1, 0)
    assert net.flush(0) == []
    net.pump(0, 2)
    assert kinds(net.flush(2)) == ["SendRow"]  # node 2 has not heard node 1's row yet
    assert net.delivers(1) == net.delivers(2) == []

    # Node 0 now holds rows from both peers with RECEIVED past seq 0: stable, delivered.
    net.pump(2, 0)
    actions = net.flush(0)
    assert kinds(actions) == ["Deliver", "SendRow"]
    assert row_value(actions, DELIVERED) == 1
    assert net.delivered(0) == [(0, 0, 0)]

    # Each of the others delivers as soon as it learns the last missing RECEIVED.
    net.pump(1, 2)
    assert kinds(net.flush(2)) == ["Deliver", "SendRow"]
    net.pump(2, 1)
    assert kinds(net.flush(1)) == ["Deliver", "SendRow"]
    for node in (0, 1, 2):
        assert net.payloads(node) == [b"m"]


def test_data_alone_is_not_received_until_the_senders_row_arrives(make_net):
    net = make_net([0, 1])
    net.submit(0, b"m")
    net.flush(0)
    net.pump(0, 1, frames=1)  # the data, not yet the row announcing SENT=1
    assert net.flush(1) == []
    assert net.cores[1].sst.own[RECEIVED] == 0
    net.pump(0, 1)
    assert row_value(net.flush(1), RECEIVED) == 1


def test_sender_does_not_deliver_its_own_message_alone(make_net):
    net = make_net([0, 1])
    net.submit(0, b"m")
    net.flush(0)
    assert net.flush(0) == []
    assert net.delivers(0) == []


def test_single_member_shard_delivers_at_once_without_sends(make_net):
    net = make_net([5], window=1)
    net.submit(5, b"a", b"b", b"c")
    actions = net.flush(5)
    # Window 1: each message is delivered (so released) before the next is numbered, in one flush.
    assert kinds(actions) == ["Deliver"] * 3
    assert net.delivered(5) == [(5, 0, 0), (5, 1, 1), (5, 2, 2)]
    assert net.flush(5) == []


# -- batching ----------------------------------------------------------------------------------


def test_sender_batches_pending_messages_into_one_send(make_net):
    net = make_net([0, 1, 2])
    net.submit(0, *[b"%d" % i for i in range(10)])
    actions = net.flush(0)
    (data,) = [a for a in actions if isinstance(a, SendData)]
    assert data.first_index == 0
    assert data.to == (1, 2)
    assert [m.index for m in data.messages] == list(range(10))


def test_receiver_delivers_everything_stable_in_one_deliver(make_net):
    net = make_net([0, 1, 2])
    for node in (0, 1, 2):
        net.submit(node, b"a", b"b", b"c", b"d")
    for _ in range(3):  # send; learn SENT; learn everyone's RECEIVED
        net.flush_all()
        net.pump_all()
    net.flush_all()
    for node in (0, 1, 2):
        (deliver,) = net.delivers(node)
        assert [m.seq for m in deliver.messages] == list(range(12))
    net.settle()
    for node in (0, 1, 2):
        assert len(net.delivers(node)) == 1


# -- flow control ------------------------------------------------------------------------------


def test_window_by_count_holds_messages_until_delivered_everywhere(make_net):
    net = make_net([0, 1, 2], window=1)
    net.submit(0, b"a", b"b")
    actions = net.flush(0)
    assert [len(a.messages) for a in actions if isinstance(a, SendData)] == [1]
    assert net.cores[0].shards[(0, 0)].frontiers()["pending"] == 1

    net.pump(0, 1)
    net.pump(0, 2)
    net.flush(1)
    net.flush(2)
    net.pump(1, 0)
    net.pump(2, 0)
    # Node 0 delivers "a" itself, but the others have not delivered it yet: "b" waits.
    actions = net.flush(0)
    assert kinds(actions) == ["Deliver", "SendRow"]

    net.pump(0, 1)
    net.pump(0, 2)
    net.pump(1, 2)
    net.pump(2, 1)
    assert "Deliver" in kinds(net.flush(1))
    assert "Deliver" in kinds(net.flush(2))
    net.pump(1, 0)
    assert not net.sends(0)[1:]  # node 2's DELIVERED is still unknown to node 0
    assert not any(isinstance(a, SendData) for a in net.flush(0))
    net.pump(2, 0)
    actions = net.flush(0)
    (data,) = [a for a in actions if isinstance(a, SendData)]
    assert data.first_index == 1
    assert [bytes(m.payload) for m in data.messages] == [b"b"]


@pytest.mark.parametrize("window", [1, 2, 3])
def test_window_by_count_is_never_exceeded(make_net, window):
    net = make_net([0, 1, 2], window=window)
    net.submit(0, *[b"m"] * 10)
    net.submit(1, *[b"n"] * 7)
    for _ in range(200):
        flushed = net.flush_all()
        for node in (0, 1):
            assert net.cores[node].shards[(0, 0)].frontiers()["inflight"] <= window
        if not net.pump_all() and not any(flushed.values()):
            break
    for node in (0, 1):
        batches = net.sends(node)
        assert all(len(b.messages) <= window for b in batches)
        indexes = [m.index for b in batches for m in b.messages]
        assert indexes == list(range(len(indexes)))
    assert len(net.delivered(2)) == 17
    assert net.delivered(0) == net.delivered(1) == net.delivered(2)


def test_window_by_bytes(make_net):
    net = make_net([0, 1], max_inflight_bytes=100)
    net.submit(0, b"a" * 60, b"b" * 60, b"c" * 30)
    actions = net.flush(0)
    assert [[len(m.payload) for m in a.messages] for a in actions if isinstance(a, SendData)] == [[60]]
    net.settle()
    assert [[len(m.payload) for m in a.messages] for a in net.sends(0)] == [[60], [60, 30]]
    assert net.payloads(1) == [b"a" * 60, b"b" * 60, b"c" * 30]


def test_window_by_bytes_always_lets_one_message_through(make_net):
    net = make_net([0, 1], max_inflight_bytes=100)
    net.submit(0, b"x" * 500, b"y", b"z" * 1000)
    net.flush(0)
    assert [[len(m.payload) for m in a.messages] for a in net.sends(0)] == [[500]]
    net.settle()
    assert [[len(m.payload) for m in a.messages] for a in net.sends(0)] == [[500], [1], [1000]]
    assert net.payloads(1) == [b"x" * 500, b"y", b"z" * 1000]


def test_pending_bytes_count_messages_not_yet_numbered(make_net):
    net = make_net([0, 1], window=1)
    net.submit(0, b"abc", memoryview(b"defgh"))
    assert net.cores[0].pending_bytes() == 8
    net.flush(0)
    assert net.cores[0].pending_bytes() == 5
    net.settle()
    assert net.cores[0].pending_bytes() == 0


# -- non-sender members ------------------------------------------------------------------------


def test_non_sender_cannot_submit(make_net):
    net = make_net([0, 1, 2], senders=[0])
    with pytest.raises(ValueError, match="node 1 is not a sender"):
        net.submit(1, b"no")
    assert net.cores[1].shards[(0, 0)].pending_bytes == 0


def test_non_sender_receives_in_order_and_its_receipt_gates_stability(make_net):
    net = make_net([0, 1, 2], senders=[0])
    net.submit(0, b"a", b"b")
    net.flush(0)
    net.pump(0, 1)
    net.flush(1)
    net.pump(1, 0)
    # Node 2, a silent member, has not received: nothing is stable yet.
    assert net.flush(0) == []
    net.pump(0, 2)
    assert kinds(net.flush(2)) == ["SendRow"]
    net.pump(2, 0)
    assert "Deliver" in kinds(net.flush(0))
    net.settle()
    for node in (0, 1, 2):
        # One sender: seq == index.
        assert net.delivered(node) == [(0, 0, 0), (0, 1, 1)]
    assert not net.sends(1) and not net.sends(2)
