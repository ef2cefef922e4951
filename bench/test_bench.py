"""Smoke tests for the benchmark scripts: correctness only, no timing assertions.

Not part of the default suite (pytest's testpaths is tests/); run with ``pytest bench``.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile

import pytest

from common import format_table, free_ports, parse_size, percentile
from raw_fanout import PeerProtocol, measure


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    with pytest.raises(ValueError):
        percentile([], 50)


def test_parse_size_and_table() -> None:
    assert parse_size("100") == 100
    assert parse_size("10KiB") == 10240
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("64k") == 65536
    text = format_table(["a", "bb"], [["x", 1], ["yy", 22]])
    assert text.splitlines()[0].startswith("a")
    assert len(text.splitlines()) == 4


def test_free_ports_are_distinct() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6


def test_frame_parser_handles_arbitrary_chunking() -> None:
    rng = random.Random(1234)
    sizes = [rng.choice([0, 1, 3, 4, 5, 100, 10240]) for _ in range(300)]
    stream = b"".join(struct.pack("!I", s) + bytes(s) for s in sizes)
    for _ in range(20):
        p = PeerProtocol(high_water=1 << 20)
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 5, 7, 64, 4096, 20000])
            p.data_received(stream[pos : pos + step])
            pos += step
        assert p.msgs == len(sizes)
        assert p.payload_bytes == sum(sizes)


def test_raw_fanout_measure_smoke() -> None:
    r = measure(100, 0.3, warmup=0.05)
    assert r["size"] == 100
    assert len(r["per_member"]) == 3
    assert r["msgs_per_s"] > 0
    assert r["bytes_per_s"] == pytest.approx(min(m["bytes_per_s"] for m in r["per_member"]))
    for m in r["per_member"]:
        # every member delivers its own messages plus what it received
        assert m["delivered_msgs"] == m["own_msgs"] + m["recv_msgs"]
        assert m["own_msgs"] > 0 and m["recv_msgs"] > 0


def test_etcd_compare_runs_and_cleans_up() -> None:
    from etcd_compare import compare, find_etcd

    if find_etcd() is None:
        pytest.skip("etcd not installed")
    before = set(os.listdir(tempfile.gettempdir()))
    r = compare([100], 0.3, concurrency=4, latency_ops=20)
    assert [x["size"] for x in r["results"]] == [100]
    assert r["results"][0]["throughput"]["ops"] > 0
    assert r["results"][0]["latency"]["ops"] > 0
    leftovers = {d for d in set(os.listdir(tempfile.gettempdir())) - before if d.startswith("derecho-bench-etcd-")}
    assert not leftovers


def test_join_measure_smoke() -> None:
    from join import delivery_dip, measure

    r = measure(256 << 10, 64 << 10, runs=1)
    assert r["state_ok"]
    assert r["state_bytes"] == 256 << 10 and r["state_messages"] == 4
    (run,) = r["per_run"]
    assert run["state"]["history"]["bytes"] == 256 << 10
    assert run["state"]["history"]["complete"] is True
    assert run["state"]["replay_bytes"] == 256 << 10
    assert run["empty"]["history"]["bytes"] == 0
    s = r["stats"]
    assert 0 < s["state_admitted_s"]["median"] <= s["state_ready_s"]["median"]
    assert s["raw_tcp_s"]["median"] > 0 and s["raw_tcp_fresh_s"]["median"] > 0 and s["sidecar_start_s"]["median"] > 0
    # The joiner's log lines were found and are in order.
    steps = run["state"]["steps"]
    assert steps["joiner_up"] <= steps["welcome"] <= steps["state_in"]
    # 10 ms ticks: 5 deliveries in the tick at t = 100.0 s, then none for 0.3 s, then one each at
    # 100.31 s and 100.6 s; the window for gaps ends 0.5 s after the end (100.7 s).
    dip = delivery_dip({10_000: 5, 10_031: 1, 10_060: 1}, 100.0, 100.2)
    assert dip["rate_during"] == pytest.approx(25.0)
    assert dip["longest_gap_s"] == pytest.approx(0.30)
