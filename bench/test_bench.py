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
