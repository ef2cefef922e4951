"""RAW (unordered) mode: FIFO per sender, delivered on receipt, Stable receipts once everyone has it.

Columns of a single raw shard with S senders: 0 = SENT, 1 + k = received from sender rank k.
"""

from __future__ import annotations

import pytest

from derecho.core.actions import Deliver, Msg, SendData, Stable
from derecho.core.group import GroupCore
from derecho.core.ordered import ProtocolError
from derecho.core.raw import raw_columns
from derecho.core.view import DeliveryMode, ShardLayout, View

RAW = DeliveryMode.RAW


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_raw_columns_are_sent_plus_one_per_sender():
    assert raw_columns(1) == 2
    assert raw_columns(4) == 5
    core = GroupCore(my_node=0, view=View.single_shard([0, 1, 2], RAW))
    assert core.shards[(0, 0)].col_received_from == [1, 2, 3]  # after SENT at column 0


def test_sender_delivers_locally_at_once_and_receivers_on_receipt(make_net):
    net = make_net([0, 1, 2], mode=RAW)
    net.submit(0, b"a", b"b")
    actions = net.flush(0)
    assert kinds(actions) == ["SendData", "Deliver", "SendRow"]
    deliver = actions[1]
    assert deliver.ordered is False and deliver.vid == 0
    assert [(m.msg_no, m.index, m.seq) for m in deliver.messages] == [(0, 0, 0), (1, 1, 1)]

    # The data alone is enough for a receiver: no row exchange, no stability wait.
    net.pump(0, 1, frames=1)
    actions = net.flush(1)
    assert kinds(actions) == ["Deliver", "SendRow"]
    assert actions[0].ordered is False
    assert net.payloads(1) == [b"a", b"b"]
    assert net.delivered(1) == [(0, 0, 0), (0, 1, 1)]


def test_each_sender_is_fifo_but_senders_interleave_freely(make_net):
    net = make_net([0, 1, 2], mode=RAW)
    net.submit(0, b"a0", b"a1")
    net.submit(1, b"b0", b"b1")
    net.flush(0)
    net.flush(1)
    # Node 2 hears node 1 first; node 0 and node 1 delivered their own first.
    net.pump(1, 2)
    net.pump(0, 2)
    net.settle()
    assert net.payloads(2) == [b"b0", b"b1", b"a0", b"a1"]
    assert net.payloads(0) == [b"a0", b"a1", b"b0", b"b1"]
    assert net.payloads(1) == [b"b0", b"b1", b"a0", b"a1"]


def test_stable_receipt_only_when_every_member_received(make_net):
    net = make_net([0, 1, 2], mode=RAW)
    net.submit(0, b"a", b"b")
    net.flush(0)
    net.pump(0, 1)
    net.pump(0, 2)
    net.flush(1)
    net.flush(2)
    net.pump(1, 0)
    assert net.flush(0) == []  # node 2's receipt is not known yet
    assert net.stable(0) == []
    net.pump(2, 0)
    actions = net.flush(0)
    assert kinds(actions) == ["Stable"]
    assert net.stable(0) == [0, 1]
    # Receivers never get receipts for someone else's messages.
    net.settle()
    assert net.stable(1) == net.stable(2) == []
    assert net.stable(0) == [0, 1]


def test_receipts_come_in_order_as_the_slowest_member_catches_up(make_net):
    net = make_net([0, 1], mode=RAW)
    net.submit(0, b"a")
    net.flush(0)
    net.submit(0, b"b")
    net.flush(0)
    net.pump(0, 1, frames=1)  # first data frame
    net.flush(1)
    net.pump(1, 0)
    net.flush(0)
    assert net.stable(0) == [0]
    net.settle()
    assert net.stable(0) == [0, 1]


def test_non_sender_receipt_gates_stable(make_net):
    net = make_net([0, 1, 2], senders=[0], mode=RAW)
    with pytest.raises(ValueError, match="not a sender"):
        net.submit(2, b"x")
    net.submit(0, b"a")
    net.flush(0)
    net.pump(0, 1)
    net.flush(1)
    net.pump(1, 0)
    assert net.flush(0) == []
    net.pump(0, 2)
    net.flush(2)
    net.pump(2, 0)
    assert kinds(net.flush(0)) == ["Stable"]
    assert net.payloads(2) == [b"a"]


def test_no_nulls_in_raw_mode(make_net):
    net = make_net([0, 1, 2], mode=RAW)
    net.submit(1, b"a", b"b", b"c")
    net.settle()
    assert [net.cores[n].sst.own[0] for n in (0, 1, 2)] == [0, 3, 0]
    for node in (0, 1, 2):
        assert net.delivered(node) == [(1, 0, 0), (1, 1, 1), (1, 2, 2)]


def test_window_by_count_releases_on_receipts(make_net):
    net = make_net([0, 1], mode=RAW, window=2)
    net.submit(0, b"a", b"b", b"c", b"d", b"e")
    actions = net.flush(0)
    assert [len(a.messages) for a in actions if isinstance(a, SendData)] == [2]
    assert net.flush(0) == []
    net.settle()
    assert all(len(s.messages) <= 2 for s in net.sends(0))
    assert net.payloads(1) == [b"a", b"b", b"c", b"d", b"e"]
    assert net.stable(0) == [0, 1, 2, 3, 4]


def test_window_by_bytes_lets_one_oversized_message_through(make_net):
    net = make_net([0, 1], mode=RAW, max_inflight_bytes=100)
    net.submit(0, b"x" * 300, b"y" * 50, b"z" * 50)
    net.flush(0)
    assert [[len(m.payload) for m in s.messages] for s in net.sends(0)] == [[300]]
    net.settle()
    assert [[len(m.payload) for m in s.messages] for s in net.sends(0)] == [[300], [50, 50]]
    assert net.stable(0) == [0, 1, 2]


def test_single_member_raw_shard_delivers_and_acknowledges_at_once():
    core = GroupCore(my_node=4, view=View.single_shard([4], RAW), window=2)
    for p in (b"a", b"b", b"c"):
        core.submit((0, 0), p)
    actions = core.flush()
    delivered = [m.msg_no for a in actions if isinstance(a, Deliver) for m in a.messages]
    stable = [m.msg_no for a in actions if isinstance(a, Stable) for m in a.messages]
    assert delivered == stable == [0, 1, 2]
    assert not any(isinstance(a, SendData) for a in actions)


def test_single_member_raw_shard_with_many_pending_messages():
    core = GroupCore(my_node=0, view=View.single_shard([0], RAW), window=1)
    for _ in range(2000):
        core.submit((0, 0), b"x")
    actions = core.flush()  # once recursed per window of messages (RecursionError)
    assert sum(len(a.messages) for a in actions if isinstance(a, Stable)) == 2000


# -- protocol errors ---------------------------------------------------------------------------


def test_gap_in_raw_indexes_is_a_protocol_error(make_net):
    net = make_net([0, 1], mode=RAW)
    net.submit(0, b"a")
    net.flush(0)
    net.pump(0, 1)
    core = net.cores[1]
    with pytest.raises(ProtocolError, match=r"sent index 2 in raw shard .* expected 1"):
        core.receive_data(0, (0, 0), 2, [Msg(0, 5, b"skip")])
    with pytest.raises(ProtocolError, match=r"sent index 0 in raw shard .* expected 1"):
        core.receive_data(0, (0, 0), 0, [Msg(0, 0, b"again")])


def test_raw_data_from_non_sender_or_under_my_rank_is_a_protocol_error():
    view = View(0, (0, 1, 2), ((ShardLayout((0, 1, 2), (0, 1), RAW),),))
    core = GroupCore(my_node=1, view=view)
    with pytest.raises(ProtocolError, match="node 2 sent data but is not a sender"):
        core.receive_data(2, (0, 0), 0, [Msg(2, 0, b"x")])
    with pytest.raises(ProtocolError, match="under my own sender rank"):
        core.receive_data(1, (0, 0), 0, [Msg(1, 0, b"x")])
    assert core.flush() == []
