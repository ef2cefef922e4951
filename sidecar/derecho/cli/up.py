"""`derecho up`: a local group of sidecars on 127.0.0.1, in the foreground."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from ..localgroup import MAX_MEMBERS, LocalGroup, LocalGroupError
from .options import local_group_dir


@click.command()
@click.option("--members", default=3, show_default=True, type=click.IntRange(1, MAX_MEMBERS), help="group size")
@local_group_dir
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--trace",
    type=click.Choice(["none", "console", "otlp"]),
    default=None,
    help="members export spans: console (into each member's sidecar.log) or otlp (OTEL_EXPORTER_OTLP_ENDPOINT)",
)
def up(members: int, directory: Path, log_level: str, trace: str | None) -> None:
    """Start a local group and keep it running until Ctrl-C or SIGTERM."""
    env = {"OTEL_TRACES_EXPORTER": trace} if trace else None
    group = LocalGroup(directory, members, log_level=log_level, env=env)
    try:
        crashed = asyncio.run(_run(group))
    except LocalGroupError as exc:
        click.echo(f"derecho up: {exc}", err=True)
        sys.exit(1)
    if crashed:
        sys.exit(1)


async def _run(group: LocalGroup) -> bool:
    """Run until asked to stop; returns whether a member died on its own."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await group.start()
    except BaseException:
        await group.stop()
        raise
    click.echo(f"local group of {len(group.members)} members is ready in {group.directory}")
    for m in group.members:
        click.echo(f"  member {m.node_id}: socket {m.socket}  http http://{m.http}  pid {m.process.pid}")
    click.echo("Ctrl-C stops every member.")
    waiter = asyncio.create_task(stop.wait())
    crashed = False
    while not stop.is_set():
        await asyncio.wait([waiter], timeout=0.5)
        dead = [m for m in group.members if not m.alive()]
        if dead and not stop.is_set():
            for m in dead:
                click.echo(f"member {m.node_id} exited with code {m.process.returncode}; see {m.log_file}", err=True)
            crashed = True
            break
    click.echo("stopping members ...")
    codes = await group.stop()
    click.echo("stopped: " + ", ".join(f"member {k} exit {v}" for k, v in codes.items()))
    return crashed
