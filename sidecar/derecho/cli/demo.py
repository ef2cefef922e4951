"""`derecho demo`: start a local group, run applications through it, explain what happened."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..client import Client, Receipt
from ..localgroup import LocalGroup, LocalGroupError, LocalMember
from .contacts import make_joiner
from .options import DEFAULT_JOIN_TIMEOUT


@click.command()
@click.option("--members", default=3, show_default=True, type=click.IntRange(1, 9), help="group size")
@click.option(
    "--messages",
    default=20_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="messages each sending app sends",
)
@click.option("--size", default=100, show_default=True, type=click.IntRange(0, 1 << 24), help="payload bytes")
@click.option(
    "--dir",
    "directory",
    default=None,
    type=click.Path(path_type=Path),
    help="where members live (default: a temporary directory)",
)
@click.option("--fail", is_flag=True, help="then crash a member (kill -9), show the group carrying on, and restart it")
def demo(members: int, messages: int, size: int, directory: Path | None, fail: bool) -> None:
    """Start a local group, send through it from several apps, and check they all agree."""
    console = Console()
    if fail and members < 3:
        console.print("[red]derecho demo: --fail needs at least 3 members, so that a majority survives")
        sys.exit(2)
    try:
        if directory is None:
            with tempfile.TemporaryDirectory(prefix="derecho-demo-") as tmp:
                ok = asyncio.run(_demo(console, Path(tmp), members, messages, size, fail))
        else:
            ok = asyncio.run(_demo(console, directory, members, messages, size, fail))
    except LocalGroupError as exc:
        console.print(f"[red]derecho demo: {exc}")
        sys.exit(1)
    sys.exit(0 if ok else 1)


async def _demo(console: Console, directory: Path, members: int, messages: int, size: int, fail: bool) -> bool:
    group = LocalGroup(directory, members, group="demo", log_level="warning")
    console.print(f"Starting a local group of [bold]{members}[/] sidecars on 127.0.0.1 in {directory} ...")
    began = time.monotonic()
    await group.start()
    console.print(f"  all members connected and ready in {time.monotonic() - began:.2f} s")
    try:
        ok = await _exercise(console, group, messages, size)
        if ok and fail:
            ok = await _fail_one(console, group)
        return ok
    finally:
        await group.stop()
        console.print("Stopped every member.")


async def _exercise(console: Console, group: LocalGroup, messages: int, size: int) -> bool:
    n = len(group.members)
    # Every member but the last runs a sending app; the last only listens (it still takes part
    # in the order through null messages, so it never holds anybody up).
    senders = list(range(max(1, n - 1)))
    clients = [await Client.connect(m.socket) for m in group.members]
    streams = [c.deliveries() for c in clients]
    total = messages * len(senders)
    console.print(
        f"Apps on members {senders} each send {messages:,} messages of {size} bytes; "
        f"every member's app reads every delivery ({total:,} each)."
    )
    receipts: dict[int, list[Receipt]] = {}
    logs: list[list[tuple[int, int, bytes]]] = [[] for _ in clients]

    async def send_all(i: int) -> None:
        out: list[Receipt] = []
        window = 2000
        for start in range(0, messages, window):
            batch = [
                clients[i].send(f"{i}:{k}:".encode().ljust(size, b".")[: max(size, len(f"{i}:{k}:"))])
                for k in range(start, min(messages, start + window))
            ]
            out.extend(await asyncio.gather(*batch))
        receipts[i] = out

    async def read_all(i: int, progress: Progress, task: int) -> None:
        log = logs[i]
        while len(log) < total:
            batch = await streams[i].next_batch()
            log.extend(zip(batch.versions, batch.senders, batch.payloads, strict=True))
            progress.update(task, advance=len(batch))

    began = time.monotonic()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks = [progress.add_task(f"member {m.node_id} delivered", total=total) for m in group.members]
        await asyncio.gather(*(send_all(i) for i in senders), *(read_all(i, progress, tasks[i]) for i in range(n)))
    elapsed = time.monotonic() - began
    for c in clients:
        await c.close()

    digests = {hashlib.sha256(repr(log).encode()).hexdigest()[:16] for log in logs}
    same_order = len(digests) == 1
    delivered_at = {(d[0], d[1], d[2]) for d in logs[0]}
    delivered_versions = {(version, sender) for version, sender, _ in logs[0]}
    receipts_match = all(
        len(rs) == messages and all((r.version, i) in delivered_versions for r in rs) for i, rs in receipts.items()
    )
    rate = total / elapsed
    console.print()
    console.print(f"[bold]What happened[/]: {total:,} messages went through a group of {n} members in {elapsed:.2f} s.")
    console.print(
        f"  every member delivered {len(logs[0]):,} messages, "
        + ("[green]in exactly the same order[/]" if same_order else "[red]in DIFFERENT orders[/]")
        + f" (order fingerprint {next(iter(digests)) if same_order else sorted(digests)})"
    )
    console.print(
        "  every send got a receipt whose version matches what the members delivered"
        if receipts_match
        else "[red]  some receipts do not match the deliveries"
    )
    console.print(f"  throughput: {rate:,.0f} messages/s delivered at every member ({rate * size / 1e6:.1f} MB/s)")
    console.print(f"  distinct messages seen: {len(delivered_at):,}")
    ok = same_order and receipts_match and len(delivered_at) == total
    console.print("[green]Demo passed.[/]" if ok else "[red]Demo found a problem.[/]")
    return ok


async def _fail_one(console: Console, group: LocalGroup) -> bool:
    """Crash the last member and show the survivors install a view without it and go on."""
    victim = group.members[-1]
    survivors = group.members[:-1]
    clients = [await Client.connect(m.socket) for m in survivors]
    views = [c.views() for c in clients]
    for v in views:
        await v.__anext__()  # the current view
    streams = [c.deliveries() for c in clients]
    console.print()
    console.print(f"Now member {victim.node_id} crashes (kill -9, pid {victim.process.pid}) ...")  # type: ignore[union-attr]
    struck = time.monotonic()
    victim.process.kill()  # type: ignore[union-attr]
    victim.process.wait()  # type: ignore[union-attr]
    changes = [await asyncio.wait_for(v.__anext__(), 30) for v in views]
    took = time.monotonic() - struck
    change = changes[0]
    console.print(
        f"  the survivors installed view {change.vid} (members {change.members}, failed {change.failed}) "
        f"in {took * 1000:.0f} ms"
    )
    count = 200
    receipts = await asyncio.gather(
        *(c.send(f"after:{i}:{k}".encode()) for i, c in enumerate(clients) for k in range(count))
    )
    total = count * len(clients)
    logs = []
    for stream in streams:
        log: list[tuple[int, int, bytes]] = []
        while len(log) < total:
            batch = await asyncio.wait_for(stream.next_batch(), 30)
            log.extend(zip(batch.versions, batch.senders, batch.payloads, strict=True))
        logs.append(log)
    for c in clients:
        await c.close()
    same = all(log == logs[0] for log in logs)
    in_new_view = all(r.version >> 32 == change.vid for r in receipts)
    console.print(
        f"  then {total} more messages: every survivor delivered them "
        + ("[green]in the same order[/]" if same else "[red]in DIFFERENT orders[/]")
        + (f", all in view {change.vid}" if in_new_view else "[red], some not in the new view[/]")
    )
    ok = same and in_new_view and all(c.failed == [victim.node_id] for c in changes)
    console.print("[green]The group carried on without the failed member.[/]" if ok else "[red]Failover problem.[/]")
    return ok and await _rejoin(console, group, victim, survivors)


async def _rejoin(console: Console, group: LocalGroup, victim: LocalMember, survivors: list[LocalMember]) -> bool:
    """Start the crashed member again (as `derecho restart` does) and show it back in the view."""
    console.print()
    console.print(f"Now member {victim.node_id} restarts and asks the survivors to let it back in ...")
    make_joiner(victim, [m.address for m in survivors])
    began = time.monotonic()
    group.spawn(victim)
    await group.wait_ready(DEFAULT_JOIN_TIMEOUT, [victim])
    view = victim.status["view"]
    console.print(
        f"  it rejoined in view {view['vid']} (members {view['members']}) after {time.monotonic() - began:.2f} s"
    )
    ok = sorted(view["members"]) == sorted(m.node_id for m in group.members)
    console.print("[green]Every member is back in one view.[/]" if ok else "[red]Rejoin problem.[/]")
    return ok
