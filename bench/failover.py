"""Failover: from a member's failure to the next view at every survivor, and the dip around it.

A local group runs a steady stream of 100 B messages from every member's app; then one member
is killed (SIGKILL: its connections break at once) or paused (SIGSTOP: only the suspicion
timeout finds it). Measured: time from the signal until every survivor's app has seen the new
view, and delivered messages per 100 ms at a survivor before and after.

With `--buckets`, each run also prints the dip: the delivery rate at the survivor (member 0's app)
in every 100 ms slice from 1 s before the signal to 1.5 s after it, each marked before / during
(signal to the new view at every survivor) / after, and a summary: the lowest slice from the
signal on, how many messages were delivered from the signal to the new view against what the
rate before would have delivered, and when the rate was back to half of what it was before.

    python bench/failover.py --members 3 --members 5 --how kill --how stop
    python bench/failover.py --members 3 --how kill --runs 3 --buckets
    python bench/failover.py --json
    python bench/failover.py --members 3 --how kill --history-bytes 0   # members keep no delivered history
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from derecho.client import Client
from derecho.localgroup import LocalGroup

BUCKET = 0.1
# Slices shown around the signal: from BEFORE slices before the one it falls in to AFTER slices after.
BEFORE = 10
AFTER = 15


async def run(members: int, how: str, history_bytes: int | None = None) -> dict[str, Any]:
    """One failure; `history_bytes` sets [state] history_bytes (None: the sidecar's default)."""
    settings = {"state": {"history_bytes": history_bytes}} if history_bytes is not None else None
    with tempfile.TemporaryDirectory(prefix="derecho-failover-") as tmp:
        group = LocalGroup(Path(tmp), members, group="failover", log_level="warning", settings=settings)
        await group.start()
        victim = members - 1
        try:
            clients = [await Client.connect(m.socket) for m in group.members]
            survivors = [i for i in range(members) if i != victim]
            views = {i: clients[i].views() for i in survivors}
            for i in survivors:
                await views[i].__anext__()  # the current view
            stream = clients[survivors[0]].deliveries()
            stop = asyncio.Event()
            buckets: dict[int, int] = {}
            began = time.monotonic()

            async def send(i: int) -> None:
                inflight: list[asyncio.Future[Any]] = []
                try:
                    with contextlib.suppress(Exception):
                        while not stop.is_set():
                            inflight.append(clients[i].submit(b"x" * 100))
                            if len(inflight) >= 200:
                                await inflight.pop(0)
                            if len(inflight) % 50 == 0:
                                await asyncio.sleep(0)
                finally:
                    # Sends left when the victim's app loses its sidecar, or when the run ends,
                    # fail with the connection: expected here, so their errors are consumed.
                    for future in inflight:
                        future.add_done_callback(lambda f: f.cancelled() or f.exception())

            async def count() -> None:
                while not stop.is_set():
                    batch = await stream.next_batch()
                    slot = int((time.monotonic() - began) / BUCKET)
                    buckets[slot] = buckets.get(slot, 0) + len(batch)

            tasks = [asyncio.create_task(send(i)) for i in range(members)]
            counter = asyncio.create_task(count())
            await asyncio.sleep(1.0)
            pid = group.members[victim].process.pid  # type: ignore[union-attr]
            struck = time.monotonic()
            os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            seen: dict[int, float] = {}

            async def wait_view(i: int) -> None:
                change = await views[i].__anext__()
                seen[i] = time.monotonic() - struck
                assert victim in change.failed, change

            await asyncio.wait_for(asyncio.gather(*(wait_view(i) for i in survivors)), 30)
            await asyncio.sleep(max(1.0, AFTER * BUCKET - max(seen.values()) + 0.1))
            stop.set()
            for t in [*tasks, counter]:
                t.cancel()
            if how == "stop":
                os.kill(pid, signal.SIGCONT)
            struck_slot = int((struck - began) / BUCKET)
            before = [buckets.get(s, 0) / BUCKET for s in range(struck_slot - 5, struck_slot)]
            after = [buckets.get(s, 0) / BUCKET for s in range(struck_slot, struck_slot + 10)]
            # The slices around the signal, each with its start relative to the signal.
            around = [
                ((s * BUCKET + began - struck), buckets.get(s, 0) / BUCKET)
                for s in range(struck_slot - BEFORE, struck_slot + AFTER)
            ]
            for c in clients:
                with contextlib.suppress(Exception):
                    await c.close()
        finally:
            await group.stop()
    return {
        "members": members,
        "how": how,
        "new_view_at_every_survivor_ms": 1000 * max(seen.values()),
        "first_survivor_ms": 1000 * min(seen.values()),
        "rate_before": sum(before) / len(before),
        "rate_per_100ms_after": after,
        "dip": dip(around, sum(before) / len(before), max(seen.values())),
    }


def dip(around: list[tuple[float, float]], rate_before: float, view_at: float) -> dict[str, Any]:
    """The throughput dip, from the 100 ms slices around the signal (start relative to it, msgs/s)."""
    slices = []
    for start, rate in around:
        phase = "before" if start + BUCKET <= 0 else "during" if start < view_at else "after"
        slices.append({"from_ms": round(1000 * start), "msgs_per_s": rate, "phase": phase})
    from_signal = [x for x in slices if x["phase"] != "before"]
    # Slices overlapping signal -> new view, pro rata: what was delivered while the group changed view.
    delivered = 0.0
    for x in from_signal:
        start = x["from_ms"] / 1000
        overlap = max(0.0, min(start + BUCKET, view_at) - max(start, 0.0))
        delivered += x["msgs_per_s"] * overlap
    recovered = next(
        (
            x["from_ms"] + 100
            for x in from_signal
            if x["from_ms"] / 1000 >= view_at and x["msgs_per_s"] >= rate_before / 2
        ),
        None,
    )
    return {
        "slices": slices,
        "lowest_after_signal": min((x["msgs_per_s"] for x in from_signal), default=0.0),
        "delivered_signal_to_view": delivered,
        "expected_at_rate_before": rate_before * view_at,
        "back_to_half_rate_ms": recovered,
    }


def print_dip(r: dict[str, Any]) -> None:
    d = r["dip"]
    back = d["back_to_half_rate_ms"]
    print(
        f"  dip at member 0 ({r['members']} members, {r['how']}): new view at every survivor "
        f"{r['new_view_at_every_survivor_ms']:.0f} ms; before {r['rate_before']:,.0f} msgs/s; lowest slice from the "
        f"signal on {d['lowest_after_signal']:,.0f} msgs/s; delivered signal -> view "
        f"{d['delivered_signal_to_view']:,.0f} (at the rate before: {d['expected_at_rate_before']:,.0f}); "
        f"back to half the rate by {back if back is not None else '-'} ms"
    )
    print(f"  {'from (ms)':>10} {'msgs/s':>9}  phase")
    for x in d["slices"]:
        bar = "#" * min(60, round(60 * x["msgs_per_s"] / max(1.0, 1.5 * r["rate_before"])))
        print(f"  {x['from_ms']:>10} {x['msgs_per_s']:>9,.0f}  {x['phase']:<6} {bar}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, action="append")
    parser.add_argument("--how", choices=["kill", "stop"], action="append")
    parser.add_argument("--runs", type=int, default=1, help="repetitions of each (members, how)")
    parser.add_argument("--buckets", action="store_true", help="print each run's 100 ms slices around the signal")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument(
        "--history-bytes",
        type=int,
        help="[state] history_bytes for the members (0: keep no delivered history); default: the sidecar's",
    )
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    if not args.json:
        print(f"{'members':>7} {'how':>5} {'new view at all (ms)':>21} {'msgs/s before':>14}  msgs/s per 100 ms after")
    for members in args.members or [3, 5]:
        for how in args.how or ["kill", "stop"]:
            for _ in range(args.runs):
                r = asyncio.run(run(members, how, args.history_bytes))
                results.append(r)
                if args.json:
                    continue
                after = " ".join(f"{x / 1000:.0f}k" for x in r["rate_per_100ms_after"])
                print(
                    f"{members:>7} {how:>5} {r['new_view_at_every_survivor_ms']:>21.0f} {r['rate_before']:>14,.0f}"
                    f"  {after}"
                )
                if args.buckets:
                    print_dip(r)
    if args.json:
        json.dump({"results": results}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
