"""The delivered history a member keeps: compact, bounded by memory, honest about what it dropped."""

from __future__ import annotations

import gc

from derecho.core.actions import Msg
from derecho.runtime.history import FRAME_BYTES, PER_BATCH, PER_MESSAGE, Batch, ShardHistory


def batch(first_seq: int, count: int, size: int, sender: int = 0) -> list[Msg]:
    msgs = [Msg(sender, first_seq + i, bytes([i % 256]) * size) for i in range(count)]
    for m in msgs:
        m.seq = m.msg_no
    return msgs


def cost(count: int, size: int) -> int:
    return count * (size + PER_MESSAGE) + PER_BATCH


def test_the_oldest_batches_go_past_the_limit_and_the_history_says_so():
    history = ShardHistory(limit=3 * cost(10, 100))
    for k in range(3):
        history.append(1, batch(10 * k, 10, 100))
    assert (history.count, history.complete, history.first_version) == (30, True, 1 << 32)
    history.append(1, batch(30, 10, 100))
    assert (history.count, history.nbytes, history.complete) == (30, 3000, False)
    assert history.first_version == (1 << 32) | 10 and history.last_version == (1 << 32) | 39


def test_many_tiny_messages_count_what_they_cost_not_just_their_payload():
    history = ShardHistory(limit=10 * cost(100, 1) // 2)
    for k in range(10):
        history.append(1, batch(100 * k, 100, 1))
    # 1,000 one-byte messages are 1 KB of payload, but their bookkeeping counts too.
    assert history.count == 500 and not history.complete


def test_a_snapshot_goes_with_the_history_it_heads():
    history = ShardHistory(limit=2 * cost(1, 100))
    history.base = (5, b"state")
    history.append(1, batch(0, 1, 100))
    history.append(1, batch(1, 1, 100))
    assert history.base == (5, b"state")
    history.append(1, batch(2, 1, 100))
    # Message 0 followed the snapshot; without it the snapshot would leave a gap.
    assert history.base is None and history.first_version == (1 << 32) | 1


def test_a_batch_keeps_every_message_and_cuts_into_frames_without_splitting_one():
    msgs = batch(7, 300, 10_000, sender=3)
    kept = Batch.of(2, msgs)
    runs = list(kept.runs())
    assert len(runs) == -(-300 * 10_000 // FRAME_BYTES)
    assert all(sum(map(len, chunks)) <= FRAME_BYTES for _, _, chunks in runs)
    assert b"".join(bytes(c) for _, _, chunks in runs for c in chunks) == b"".join(m.payload for m in msgs)
    start, end, _ = runs[1]
    assert kept.versions(start, end) == [(2 << 32) | m.seq for m in msgs[start:end]]
    assert kept.senders[start:end].tolist() == [3] * (end - start)
    big_messages = batch(0, 2, 3 * FRAME_BYTES)
    big = Batch.of(2, big_messages)
    assert [(s, e) for s, e, _ in big.runs()] == [(0, 1), (1, 2)]  # a large message goes alone
    # Large payloads are kept as they came, not copied.
    assert all(chunks[0] is m.payload for (_, _, chunks), m in zip(big.runs(), big_messages, strict=True))


def test_the_garbage_collector_tracks_one_object_per_batch_not_per_message():
    history = ShardHistory(limit=1 << 30)
    gc.collect()
    before = len(gc.get_objects())
    for k in range(100):
        history.append(1, batch(1000 * k, 1000, 10))
    gc.collect()
    assert len(gc.get_objects()) - before < 5 * 100  # 100,000 messages kept
