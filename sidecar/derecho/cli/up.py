"""`derecho up`: a local group of sidecars on 127.0.0.1, in the foreground.

It forms a new group (or, with --join, adds members to a running one), then reports what
happens to it until Ctrl-C: members crashing, pausing, restarting and joining through
`derecho signal`, `derecho restart` and `derecho add` in another terminal, and every new view.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from pathlib import Path

import click

from ..localgroup import ENV_FILE, MAX_MEMBERS, LocalGroup, LocalGroupError, LocalMember, member_dirs, read_members
from .contacts import MAX_NODE_ID, check_address, ids_text, member_line, view_line
from .options import DEFAULT_JOIN_TIMEOUT, local_group_dir
from .watch import Watcher

START_TIMEOUT = 30.0
POLL_INTERVAL = 0.5


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
@click.option(
    "--join",
    multiple=True,
    callback=check_address,
    metavar="HOST:PORT",
    help="join the running group that has a member at this peer address (repeatable), instead of forming one",
)
@click.option(
    "--first-id",
    type=click.IntRange(0, MAX_NODE_ID),
    default=None,
    help="node id of the first member [default: 0; with --join, one above the largest id in DIR]",
)
@click.option(
    "--group",
    "group_name",
    default=None,
    help="group name [default: local; with --join, the name in DIR's configs]; joiners need the group's name",
)
def up(
    members: int,
    directory: Path,
    log_level: str,
    trace: str | None,
    join: list[str],
    first_id: int | None,
    group_name: str | None,
) -> None:
    """Start a local group and keep it running until Ctrl-C or SIGTERM, reporting view changes."""
    env = {"OTEL_TRACES_EXPORTER": trace} if trace else {}
    directory = directory.resolve()
    try:
        if join:
            group = _joining(directory, members, first_id, join, group_name, log_level, env)
        else:
            group = _fresh(directory, members, first_id or 0, group_name, log_level, env)
        code = asyncio.run(_run(group))
    except LocalGroupError as exc:
        click.echo(f"derecho up: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


def _refuse_running(members: list[LocalMember], directory: Path) -> None:
    running = [f"{m.node_id} (pid {pid})" for m in members if (pid := m.current_pid()) is not None]
    if running:
        which = f"members {', '.join(running)} are" if len(running) > 1 else f"member {running[0]} is"
        raise LocalGroupError(
            f"{which} still running in {directory}; stop that group first "
            f"(Ctrl-C in its `derecho up`, or `derecho signal --dir {directory} --member N term`), or use another --dir"
        )


def _fresh(
    directory: Path, count: int, first_id: int, name: str | None, log_level: str, env: dict[str, str]
) -> LocalGroup:
    """A new group in `directory`, which a previous run may have left behind."""
    existing = member_dirs(directory)
    _refuse_running(existing, directory)
    ids = range(first_id, first_id + count)
    leftover = [m for m in existing if m.node_id not in ids]
    for m in leftover:
        shutil.rmtree(m.directory)
    if leftover:
        names = ", ".join(m.directory.name for m in leftover)
        click.echo(f"removed {names}: left by a previous run in {directory}, and not in the new group")
    # Members that find a saved view on start rejoin the group it names, which is gone now.
    saved = [m for m in existing if m.node_id in ids and m.saved_state.exists()]
    for m in saved:
        shutil.rmtree(m.saved_state)
    if saved:
        names = ", ".join(f"{m.directory.name}/{m.saved_state.name}" for m in saved)
        click.echo(f"forming a new group: cleared the saved views of a previous run ({names})")
    group = LocalGroup(directory, count, group=name or "local", log_level=log_level, env=env, first_id=first_id)
    group.save_env()
    return group


def _joining(
    directory: Path,
    count: int,
    first_id: int | None,
    join: list[str],
    name: str | None,
    log_level: str,
    env: dict[str, str],
) -> LocalGroup:
    """New members in `directory` that join the group at `join` (DIR may be that group's own)."""
    existing = member_dirs(directory)
    if first_id is None:
        if not existing:
            raise LocalGroupError(
                f"{directory} holds no members yet, so pass --first-id with ids the group you join does not use "
                "(`derecho status --socket ...` on one of its members shows its view)"
            )
        first_id = max(m.node_id for m in existing) + 1
    ids = range(first_id, first_id + count)
    if ids[-1] > MAX_NODE_ID:
        raise LocalGroupError(
            f"--first-id {first_id} with --members {count} goes past the largest node id {MAX_NODE_ID}"
        )
    _refuse_running([m for m in existing if m.node_id in ids], directory)
    for m in existing:
        if m.node_id in ids:
            shutil.rmtree(m.saved_state, ignore_errors=True)  # a saved view of some earlier group
    known, template = read_members(directory)
    group = LocalGroup(
        directory,
        count,
        group=name or template.get("group", "local"),
        log_level=log_level,
        env=env,
        first_id=first_id,
        join=join,
        known=[m for m in known if m.node_id not in ids],
    )
    if not (directory / ENV_FILE).exists():  # DIR may be the joined group's: keep its setting
        group.save_env()
    return group


async def _run(group: LocalGroup) -> int:
    """Start the new members, then report until asked to stop; returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    mine = group.new_members
    try:
        await group.start(DEFAULT_JOIN_TIMEOUT if group.join else START_TIMEOUT)
    except BaseException:
        await group.stop(members=mine)
        raise
    if group.join:
        click.echo(f"{ids_text(mine)} joined the group through {', '.join(group.join)}; they run in {group.directory}")
    else:
        click.echo(f"local group of {len(mine)} members is ready in {group.directory}")
    for m in mine:
        click.echo(member_line(m))
    latest = max((m.status for m in mine), key=lambda s: s["view"]["vid"])
    click.echo(view_line(latest))
    click.echo(
        f"`derecho signal|restart|add --dir {group.directory}` in another terminal crash, pause, restart and add "
        "members; view changes show here."
    )
    click.echo("Ctrl-C stops every member.")
    watcher = Watcher(group, mine, click.echo, latest["view"]["vid"])
    try:
        code = await _watch(watcher, stop)
    except Exception as exc:  # whatever went wrong in here, the members must not be left running
        click.echo(f"derecho up: {exc!r}; stopping", err=True)
        code = 1
    click.echo("stopping members ...")
    running = {m.node_id for m in watcher.members if m.alive()}
    codes = await group.stop(members=[m for m in watcher.members if m.node_id in running])
    # Exit codes are known for the members started here, not for those `restart` or `add` started.
    stopped = [f"member {k} exit {v}" if v is not None else f"member {k} stopped" for k, v in codes.items()]
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "no member was running")
    return code


async def _watch(watcher: Watcher, stop: asyncio.Event) -> int:
    """Report until asked to stop (0), or until no member runs any more (1)."""
    waiter = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            await asyncio.wait([waiter], timeout=POLL_INTERVAL)
            if stop.is_set():
                break
            await watcher.poll()
            if not watcher.running():
                click.echo(
                    "no member is running any more, and a group cannot be restarted from nothing yet; "
                    f"`derecho up --dir {watcher.directory}` starts a new one"
                )
                return 1
        return 0
    finally:
        waiter.cancel()
