"""Run simulation seeds: `python -m derecho.sim --seeds 1000` or replay one: `--seed 42`."""

from __future__ import annotations

import argparse
import sys
import time

from ..core.view import DeliveryMode
from .checkers import InvariantViolation, check_all
from .cluster import Cluster, Scenario


def scenario_for(seed: int) -> Scenario:
    """Vary group shape with the seed so a range of seeds covers many layouts."""
    import random

    rng = random.Random(seed ^ 0x5EED)
    members = rng.randint(1, 9)
    return Scenario(
        members=members,
        shards=rng.randint(1, max(1, members // 2)),
        mode=DeliveryMode.RAW if rng.random() < 0.2 else DeliveryMode.ORDERED,
        messages=rng.randint(1, 120),
        window=rng.choice((1, 2, 4, 16)),
        max_inflight_bytes=rng.choice((1, 5000, 1 << 20)),
    )


def run_seed(seed: int) -> Cluster:
    cluster = Cluster(seed, scenario_for(seed))
    cluster.run()
    check_all(cluster)
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derecho.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay exactly this seed")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    began = time.monotonic()
    failed = 0
    for seed in seeds:
        try:
            run_seed(seed)
        except (InvariantViolation, RuntimeError) as exc:
            failed += 1
            print(f"FAIL {exc}\n  replay: python -m derecho.sim --seed {seed}", file=sys.stderr)
    total = len(seeds)
    print(f"{total - failed} passed, {failed} failed ({time.monotonic() - began:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
