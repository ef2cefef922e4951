"""The delivered history a member keeps: bounded by memory, honest about what it dropped."""

from __future__ import annotations

from derecho.core.actions import Msg
from derecho.runtime.history import PER_MESSAGE, ShardHistory


def batch(first_seq: int, count: int, size: int) -> list[Msg]:
    msgs = [Msg(0, first_seq + i, b"x" * size) for i in range(count)]
    for m in msgs:
        m.seq = m.msg_no
    return msgs


def test_the_oldest_batches_go_past_the_limit_and_the_history_says_so():
    history = ShardHistory(limit=3 * (10 * 100 + 10 * PER_MESSAGE))
    for k in range(3):
        history.append(1, batch(10 * k, 10, 100), 1000)
    assert (history.count, history.complete, history.first_version) == (30, True, 1 << 32)
    history.append(1, batch(30, 10, 100), 1000)
    assert (history.count, history.nbytes, history.complete) == (30, 3000, False)
    assert history.first_version == (1 << 32) | 10 and history.last_version == (1 << 32) | 39


def test_many_tiny_messages_count_what_they_cost_not_just_their_payload():
    history = ShardHistory(limit=100 * PER_MESSAGE)
    for k in range(10):
        history.append(1, batch(100 * k, 100, 1), 100)
    # 1,000 one-byte messages are 1 KB of payload but about 400 KB of memory: most went.
    assert history.count < 200 and not history.complete


def test_a_snapshot_goes_with_the_history_it_heads():
    history = ShardHistory(limit=2 * (100 + PER_MESSAGE))
    history.base = (5, b"state")
    history.append(1, batch(0, 1, 100), 100)
    history.append(1, batch(1, 1, 100), 100)
    assert history.base == (5, b"state")
    history.append(1, batch(2, 1, 100), 100)
    # Message 0 followed the snapshot; without it the snapshot would leave a gap.
    assert history.base is None and history.first_version == (1 << 32) | 1
