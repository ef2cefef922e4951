"""Run simulation seeds: `python -m derecho.sim --seeds 1000`, replay one: `--seed 42`.

About 40% of seeds crash members (once the core has membership: GroupCore.suspect); `--crashes`
makes every seed a crash scenario, `--no-crashes` none. `--soak 600` runs seeds for ten minutes.
A failing seed prints the command that replays it; `--trace` prints a replay's fault timeline.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from ..core.view import DeliveryMode
from .checkers import InvariantViolation, check_all
from .cluster import Cluster, Scenario, membership_supported

# Share of seeds that crash members when a run mixes (crashes=None).
CRASH_SHARE = 0.4


def scenario_for(seed: int, crashes: bool | None = None) -> Scenario:
    """Vary group shape with the seed so a range of seeds covers many layouts.

    crashes=None mixes: about 40% of seeds crash 1..minority members. True forces a crash
    scenario, False a fault-free one. The group shape is drawn first, the same way whatever
    `crashes` says, so a fault-free seed is exactly the scenario it always was.
    """
    rng = random.Random(seed ^ 0x5EED)
    members = rng.randint(1, 9)
    scenario = Scenario(
        members=members,
        shards=rng.randint(1, max(1, members // 2)),
        mode=DeliveryMode.RAW if rng.random() < 0.2 else DeliveryMode.ORDERED,
        messages=rng.randint(1, 120),
        window=rng.choice((1, 2, 4, 16)),
        max_inflight_bytes=rng.choice((1, 5000, 1 << 20)),
    )
    faults = random.Random(seed ^ 0xFA17)
    crashy = faults.random() < CRASH_SHARE if crashes is None else crashes
    if not crashy:
        return scenario
    if scenario.members < 3:
        # A crash needs a majority left behind: 3..9 members.
        scenario.members = faults.randint(3, 9)
    minority = (scenario.members - 1) // 2
    scenario.crashes = faults.randint(1, minority)
    scenario.leader_crash = scenario.crashes >= 2 and faults.random() < 0.5
    # Only ordered shards persist a ragged trim; raw shards emit no Persist to crash after.
    scenario.persist_crash = scenario.crashes >= 2 and faults.random() < 0.5 and scenario.mode is DeliveryMode.ORDERED
    scenario.partial_delivery = faults.random() < 0.8
    scenario.suspect_delay = faults.choice((1, 5, 20, 60, 300))
    scenario.persist_delay = faults.choice((0, 2, 10, 40))
    return scenario


def run_seed(seed: int, crashes: bool | None = None, trace: bool = False) -> Cluster:
    cluster = Cluster(seed, scenario_for(seed, crashes), trace=trace)
    try:
        cluster.run()
        check_all(cluster)
    finally:
        if trace and cluster.trace is not None:
            print("\n".join(cluster.trace), file=sys.stderr)
    return cluster


def replay_command(seed: int, crashes: bool | None) -> str:
    flag = {None: "", True: " --crashes", False: " --no-crashes"}[crashes]
    return f"python -m derecho.sim{flag} --seed {seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derecho.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay exactly this seed")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, help="first seed (default 0; for --soak a random one)")
    faults = parser.add_mutually_exclusive_group()
    faults.add_argument("--crashes", dest="crashes", action="store_true", default=None, help="every seed crashes")
    faults.add_argument("--no-crashes", dest="crashes", action="store_false", help="no seed crashes")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="run consecutive seeds for this long")
    parser.add_argument("--trace", action="store_true", help="print each run's fault timeline (for a replay)")
    parser.add_argument("--show", action="store_true", help="print each seed's scenario")
    args = parser.parse_args(argv)
    crashes = args.crashes
    if not membership_supported():
        if crashes:
            print("--crashes needs the core's membership API (GroupCore.suspect), which it lacks", file=sys.stderr)
            return 2
        if crashes is None:
            print("note: the core has no membership API yet; running fault-free scenarios only", file=sys.stderr)
            crashes = False
    start = args.start if args.start is not None else (random.randrange(1 << 31) if args.soak else 0)
    if args.seed is not None:
        seeds = iter([args.seed])
    elif args.soak:
        print(f"soak for {args.soak:.0f}s from seed {start}", file=sys.stderr)
        seeds = iter(range(start, 1 << 62))
    else:
        seeds = iter(range(start, start + args.seeds))
    began = time.monotonic()
    failed = total = 0
    for seed in seeds:
        if args.soak and args.seed is None and time.monotonic() - began >= args.soak:
            break
        total += 1
        if args.show:
            print(f"seed {seed}: {scenario_for(seed, crashes)}", file=sys.stderr)
        try:
            run_seed(seed, crashes, trace=args.trace)
        except (InvariantViolation, RuntimeError) as exc:
            failed += 1
            print(f"FAIL {exc}\n  replay: {replay_command(seed, args.crashes)}", file=sys.stderr)
    print(f"{total - failed} passed, {failed} failed ({time.monotonic() - began:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
