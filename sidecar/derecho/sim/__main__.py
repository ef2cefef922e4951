"""Run simulation seeds: `python -m derecho.sim --seeds 1000`, replay one: `--seed 42`.

About 40% of seeds crash members (once the core has membership: GroupCore.suspect); `--crashes`
makes every seed a crash scenario, `--no-crashes` none; `--joins` adds 1..3 joiners to every
seed (crash scenarios or not); `--partitions` cuts a minority off in every seed, heals the cut,
and restarts the minority as joiners. `--soak 600` runs seeds for ten minutes.
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


def scenario_for(
    seed: int,
    crashes: bool | None = None,
    false_suspicions: int | None = None,
    joins: bool = False,
    partitions: bool = False,
) -> Scenario:
    """Vary group shape with the seed so a range of seeds covers many layouts.

    crashes=None mixes: about 40% of seeds crash 1..minority members. True forces a crash
    scenario, False a fault-free one. The group shape is drawn first, the same way whatever
    `crashes` says, so a fault-free seed is exactly the scenario it always was. Of the crash
    scenarios about 10% also falsely suspect a live member (false_suspicions=N forces N in
    every crash scenario, 0 none; crashes then make room for them in the minority) and about
    20% have a member leave on purpose.
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
    if joins:
        # Drawn from their own generator so the rest of the scenario is what the seed always was.
        joining = random.Random(seed ^ 0x701A)
        scenario.joins = joining.randint(1, 3)
        # Raw shards carry no state to a joiner (no total order to cut it at): joins are ordered.
        scenario.mode = DeliveryMode.ORDERED
    if partitions:
        cutting = random.Random(seed ^ 0xC07)
        scenario.partition = True
        scenario.mode = DeliveryMode.ORDERED  # the restarted minority joins: ordered shards carry state
        scenario.members = max(scenario.members, cutting.randint(3, 9))
        scenario.shards = min(scenario.shards, max(1, scenario.members // 3))
        scenario.heal_after = cutting.choice((10, 100, 400))
    faults = random.Random(seed ^ 0xFA17)
    crashy = faults.random() < CRASH_SHARE if crashes is None else crashes
    if not crashy:
        return scenario
    if scenario.members < 3:
        # A crash needs a majority left behind: 3..9 members.
        scenario.members = faults.randint(3, 9)
    minority = (scenario.members - 1) // 2
    # Every option is drawn whatever the others say, so each is a fixed function of the seed.
    scenario.crashes = faults.randint(1, minority)
    leader, persist, partial, leave, wrongly = (faults.random() for _ in range(5))
    scenario.suspect_delay = faults.choice((1, 5, 20, 60, 300))
    scenario.persist_delay = faults.choice((0, 2, 10, 40))
    scenario.partial_delivery = partial < 0.8
    if false_suspicions is not None:
        wrongly = 0.0 if false_suspicions > 0 else 1.0
    if wrongly < 0.1:
        # A live member is falsely suspected; the crashes make room for it in the minority.
        scenario.false_suspicions = false_suspicions or 1
        scenario.crashes = max(0, min(scenario.crashes, minority - scenario.false_suspicions))
    elif leave < 0.25 and scenario.crashes < minority:
        # A member leaves on purpose (when the layout can lose one more).
        scenario.leaves = 1
    scenario.leader_crash = scenario.crashes >= 2 and leader < 0.5
    # Only ordered shards persist a ragged trim; raw shards emit no Persist to crash after.
    scenario.persist_crash = scenario.crashes >= 2 and persist < 0.5 and scenario.mode is DeliveryMode.ORDERED
    return scenario


def run_seed(
    seed: int,
    crashes: bool | None = None,
    trace: bool = False,
    false_suspicions: int | None = None,
    joins: bool = False,
    partitions: bool = False,
) -> Cluster:
    cluster = Cluster(seed, scenario_for(seed, crashes, false_suspicions, joins, partitions), trace=trace)
    try:
        cluster.run()
        check_all(cluster)
    finally:
        if trace and cluster.trace is not None:
            print("\n".join(cluster.trace), file=sys.stderr)
    return cluster


def replay_command(
    seed: int, crashes: bool | None, false_suspicions: int | None = None, joins: bool = False, partitions: bool = False
) -> str:
    flag = {None: "", True: " --crashes", False: " --no-crashes"}[crashes]
    if joins:
        flag += " --joins"
    if partitions:
        flag += " --partitions"
    if false_suspicions is not None:
        flag += f" --false-suspicions {false_suspicions}"
    return f"python -m derecho.sim{flag} --seed {seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m derecho.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay exactly this seed")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, help="first seed (default 0; for --soak a random one)")
    faults = parser.add_mutually_exclusive_group()
    faults.add_argument("--crashes", dest="crashes", action="store_true", default=None, help="every seed crashes")
    faults.add_argument("--no-crashes", dest="crashes", action="store_false", help="no seed crashes")
    parser.add_argument(
        "--false-suspicions",
        type=int,
        metavar="N",
        help="falsely suspect N live members in every crash scenario (0: never; default: about 10%% of them, one)",
    )
    parser.add_argument("--joins", action="store_true", help="1..3 members join in every seed")
    parser.add_argument(
        "--partitions", action="store_true", help="cut a minority off in every seed, heal, restart it as joiners"
    )
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
            scenario = scenario_for(seed, crashes, args.false_suspicions, args.joins, args.partitions)
            print(f"seed {seed}: {scenario}", file=sys.stderr)
        try:
            run_seed(
                seed,
                crashes,
                trace=args.trace,
                false_suspicions=args.false_suspicions,
                joins=args.joins,
                partitions=args.partitions,
            )
        except (InvariantViolation, RuntimeError) as exc:
            failed += 1
            replay = replay_command(seed, args.crashes, args.false_suspicions, args.joins, args.partitions)
            print(f"FAIL {exc}\n  replay: {replay}", file=sys.stderr)
    print(f"{total - failed} passed, {failed} failed ({time.monotonic() - began:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
