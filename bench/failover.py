"""Failover: from a member's failure to the next view at every survivor, and the dip around it.

A local group runs a steady stream of 100 B messages from every member's app; then one member
is killed (SIGKILL: its connections break at once) or paused (SIGSTOP: only the suspicion
timeout finds it). Measured: time from the signal until every survivor's app has seen the new
view, and delivered messages per 100 ms at a survivor before and after.

    python bench/failover.py --members 3 --members 5 --how kill --how stop
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def run(members: int, how: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="derecho-failover-") as tmp:
        group = LocalGroup(Path(tmp), members, group="failover", log_level="warning")
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
            await asyncio.sleep(1.0)
            stop.set()
            for t in [*tasks, counter]:
                t.cancel()
            if how == "stop":
                os.kill(pid, signal.SIGCONT)
            struck_slot = int((struck - began) / BUCKET)
            before = [buckets.get(s, 0) / BUCKET for s in range(struck_slot - 5, struck_slot)]
            after = [buckets.get(s, 0) / BUCKET for s in range(struck_slot, struck_slot + 10)]
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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, action="append")
    parser.add_argument("--how", choices=["kill", "stop"], action="append")
    args = parser.parse_args(argv)
    print(f"{'members':>7} {'how':>5} {'new view at all (ms)':>21} {'msgs/s before':>14}  msgs/s per 100 ms after")
    for members in args.members or [3, 5]:
        for how in args.how or ["kill", "stop"]:
            r = asyncio.run(run(members, how))
            after = " ".join(f"{x / 1000:.0f}k" for x in r["rate_per_100ms_after"])
            print(
                f"{members:>7} {how:>5} {r['new_view_at_every_survivor_ms']:>21.0f} {r['rate_before']:>14,.0f}  {after}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
