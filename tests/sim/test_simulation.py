"""The seeded simulator: many seeds pass every invariant, a broken core is caught, a seed replays exactly.

A failing seed prints its replay command: `python -m derecho.sim --seed N`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from derecho.core.actions import Deliver
from derecho.core.ordered import OrderedShard
from derecho.core.raw import RawShard
from derecho.core.view import DeliveryMode
from derecho.sim import __main__ as sim_main
from derecho.sim.__main__ import run_seed, scenario_for
from derecho.sim.checkers import (
    InvariantViolation,
    check_all,
    check_integrity,
    check_liveness,
    check_total_order,
)
from derecho.sim.cluster import Cluster, Delivered, Scenario

SEEDS = 600
CHUNK = 50


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_seeds_keep_every_invariant(start):
    for seed in range(start, start + CHUNK):
        try:
            run_seed(seed)
        except (InvariantViolation, RuntimeError) as exc:
            pytest.fail(f"{exc}\n  replay: python -m derecho.sim --seed {seed}", pytrace=False)


def test_the_seeds_cover_many_shapes():
    scenarios = [scenario_for(seed) for seed in range(SEEDS)]
    assert {s.members for s in scenarios} == set(range(1, 10))
    assert {s.window for s in scenarios} == {1, 2, 4, 16}
    assert {s.max_inflight_bytes for s in scenarios} == {1, 5000, 1 << 20}
    modes = Counter(s.mode for s in scenarios)
    assert modes[DeliveryMode.RAW] >= 60 and modes[DeliveryMode.ORDERED] >= 300
    assert sum(1 for s in scenarios if s.shards > 1) >= 100


# -- the checkers can fail -----------------------------------------------------------------------


def seeds_in(mode: DeliveryMode, count: int) -> list[int]:
    return [s for s in range(10 * count) if scenario_for(s).mode is mode][:count]


def violations(seeds) -> dict[int, str]:
    found = {}
    for seed in seeds:
        try:
            run_seed(seed)
        except InvariantViolation as exc:
            found[seed] = str(exc)
    return found


def test_a_core_without_nulls_is_caught(monkeypatch):
    monkeypatch.setattr(OrderedShard, "_send_nulls", lambda self: None)
    found = violations(seeds_in(DeliveryMode.ORDERED, 40))
    assert found, "no seed noticed that idle senders never emit nulls"
    # Messages behind an idle sender are never stable: liveness is what breaks.
    assert any("is missing" in message for message in found.values())


def test_delivering_a_round_past_stability_is_caught(monkeypatch):
    # One round (num_senders seqs) past what every member has received. (Just one seq past can be
    # invisible in a run without failures: the message at seq `stable` may be delivered late but
    # still in seq order, so only the DELIVERED counter is wrong.)
    deliver = OrderedShard._deliver
    monkeypatch.setattr(OrderedShard, "_deliver", lambda self, stable: deliver(self, stable + self.num_senders))
    found = violations(seeds_in(DeliveryMode.ORDERED, 40))
    assert found, "no seed noticed delivery of seqs not yet received everywhere"


def test_delivering_a_batch_out_of_seq_order_is_caught(monkeypatch):
    deliver = OrderedShard._deliver

    def reversed_batches(self, stable):
        result = deliver(self, stable)
        if self.out and isinstance(self.out[-1], Deliver):
            self.out[-1].messages.reverse()
        return result

    monkeypatch.setattr(OrderedShard, "_deliver", reversed_batches)
    found = violations(seeds_in(DeliveryMode.ORDERED, 40))
    assert any("seqs not strictly increasing" in m or "total order" in m or "FIFO" in m for m in found.values())


def test_raw_delivery_out_of_fifo_order_is_caught(monkeypatch):
    receive = RawShard.receive
    monkeypatch.setattr(RawShard, "receive", lambda self, sender, first, msgs: receive(self, sender, first, msgs[::-1]))
    found = violations(seeds_in(DeliveryMode.RAW, 40))
    assert any("broke FIFO" in message for message in found.values())


def finished(seed: int = 3, **scenario) -> Cluster:
    cluster = Cluster(seed, Scenario(**scenario))
    cluster.run()
    check_all(cluster)
    return cluster


def test_checkers_catch_a_duplicate_delivery():
    cluster = finished(members=3, messages=10)
    log = cluster.members[1].delivered[(0, 0)]
    log.append(log[0])
    with pytest.raises(InvariantViolation, match=r"node 1 delivered .* twice"):
        check_integrity(cluster)


def test_checkers_catch_an_invented_message():
    cluster = finished(members=3, messages=10)
    log = cluster.members[0].delivered[(0, 0)]
    log.append(Delivered((0, 0), 0, 10_000, 0, 999, b"forged"))
    with pytest.raises(InvariantViolation, match="which nobody sent"):
        check_integrity(cluster)


def test_checkers_catch_diverging_orders():
    cluster = finished(members=3, messages=10, quiet_fraction=0.0)
    log = cluster.members[2].delivered[(0, 0)]
    log[0], log[1] = log[1], log[0]
    with pytest.raises(InvariantViolation, match=r"total order broken in shard \(0, 0\): node 2"):
        check_total_order(cluster)


def test_checkers_catch_a_lost_message():
    cluster = finished(members=3, messages=10)
    cluster.members[1].delivered[(0, 0)].pop()
    with pytest.raises(InvariantViolation, match=r"node 1 in shard \(0, 0\) is missing 1 messages"):
        check_liveness(cluster)


def test_checkers_catch_a_missing_raw_receipt():
    cluster = finished(members=2, messages=5, mode=DeliveryMode.RAW, quiet_fraction=0.0)
    node = next(n for n, m in cluster.members.items() if m.stable_raw.get((0, 0)))
    cluster.members[node].stable_raw[(0, 0)].pop()
    with pytest.raises(InvariantViolation, match=f"node {node} lacks raw receipts"):
        check_liveness(cluster)


# -- replay ------------------------------------------------------------------------------------

# A run's fingerprint: steps taken and every member's delivery sequence (seq, sender, msg_no, payload).
FINGERPRINT = """
import hashlib, json, sys
from derecho.sim.__main__ import run_seed
cluster = run_seed(int(sys.argv[1]))
logs = {
    f"{node}/{key}": [[d.seq, d.sender, d.msg_no, hashlib.sha256(d.payload).hexdigest()] for d in log]
    for node, member in sorted(cluster.members.items())
    for key, log in sorted(member.delivered.items())
}
print(json.dumps({"steps": cluster.steps, "logs": logs}, sort_keys=True))
"""


def fingerprint(cluster: Cluster) -> dict:
    logs = {
        f"{node}/{key}": [[d.seq, d.sender, d.msg_no, hashlib.sha256(d.payload).hexdigest()] for d in log]
        for node, member in sorted(cluster.members.items())
        for key, log in sorted(member.delivered.items())
    }
    return {"steps": cluster.steps, "logs": logs}


def busy_seed() -> int:
    """The first seed with a big ordered group and many messages, so replay has much to agree on."""
    return next(
        s
        for s in range(1000)
        if (sc := scenario_for(s)).members >= 6 and sc.messages >= 60 and sc.mode is DeliveryMode.ORDERED
    )


def test_same_seed_replays_exactly_in_process():
    seed = busy_seed()
    first, second = run_seed(seed), run_seed(seed)
    assert first.steps == second.steps > 0
    assert first.members.keys() == second.members.keys()
    for node in first.members:
        assert first.members[node].delivered == second.members[node].delivered
        assert first.members[node].submitted == second.members[node].submitted
    assert sum(len(log) for m in first.members.values() for log in m.delivered.values()) > 0


def test_different_seeds_differ():
    seed = busy_seed()
    assert fingerprint(run_seed(seed)) != fingerprint(run_seed(seed + 1))


def test_same_seed_replays_exactly_across_processes():
    seed = busy_seed()
    expected = fingerprint(run_seed(seed))
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", FINGERPRINT, str(seed)], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(out.stdout) == expected


def test_cli_replays_one_seed():
    seed = busy_seed()
    out = subprocess.run(
        [sys.executable, "-m", "derecho.sim", "--seed", str(seed)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("1 passed, 0 failed")


def test_cli_prints_the_replay_command_of_a_failing_seed(monkeypatch, capsys):
    monkeypatch.setattr(OrderedShard, "_send_nulls", lambda self: None)
    failing = next(iter(violations(seeds_in(DeliveryMode.ORDERED, 40))))
    assert sim_main.main(["--seeds", "3", "--start", str(failing)]) == 1
    captured = capsys.readouterr()
    assert f"replay: python -m derecho.sim --seed {failing}" in captured.err
    assert "FAIL seed" in captured.err
    assert captured.out.startswith(("0 passed, 3 failed", "1 passed, 2 failed", "2 passed, 1 failed"))
    assert sim_main.main(["--seed", str(failing)]) == 1
