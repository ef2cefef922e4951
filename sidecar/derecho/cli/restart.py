"""`derecho restart`: start a member of a local group again, so it rejoins the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import click

from ..localgroup import LocalGroup, LocalGroupError, LocalMember, process_state, read_pid
from .contacts import join_addresses, make_joiner, member_line, not_ready_hint, view_line
from .options import join_wait, local_group_dir


@click.command()
@local_group_dir
@click.option("--member", "node_id", required=True, type=click.IntRange(0), help="member number")
@click.option("--force", is_flag=True, help="if the member is still running, kill it (SIGKILL) first")
@join_wait
def restart(directory: Path, node_id: int, force: bool, timeout: float) -> None:
    """Start a member that is down again; it rejoins the running group.

    The member (killed, or exited) keeps its id, config and port, and joins through the
    members that are running. `derecho up` on DIR reports it and stops it at Ctrl-C.
    """
    try:
        group = LocalGroup.open(directory)
        member = group.member(node_id)
        asyncio.run(_restart(group, member, force, timeout))
    except LocalGroupError as exc:
        click.echo(f"derecho restart: {exc}", err=True)
        sys.exit(1)
    click.echo(f"member {node_id} rejoined the group in {view_line(member.status)}")
    click.echo(member_line(member))


async def _restart(group: LocalGroup, member: LocalMember, force: bool, timeout: float) -> None:
    node = member.node_id
    pid = member.current_pid()
    if pid is not None and not force:
        paused = ", paused by SIGSTOP" if process_state(pid) == "T" else ""
        raise LocalGroupError(
            f"member {node} is still running (pid {pid}{paused}); restart is for a member that is down: "
            f"crash it first with `derecho signal --dir {group.directory} --member {node} kill`, or pass --force"
        )
    if pid is not None:
        click.echo(f"killing member {node} (pid {pid}) first, as --force asks")
        await _kill(member, pid)
        member.pid_file.unlink(missing_ok=True)
    elif member.pid_file.exists():
        # A killed sidecar cannot remove its PID file: the usual case after `derecho signal kill`.
        stale = read_pid(member.pid_file)
        what = f"names pid {stale}, which is not running" if stale is not None else "does not hold a process id"
        click.echo(f"removing the stale {member.pid_file} (it {what})")
        member.pid_file.unlink(missing_ok=True)
    contacts = await join_addresses(group, {node}, f"member {node}")
    make_joiner(member, contacts)
    click.echo(f"starting member {node}; it rejoins through {', '.join(contacts)} (log: {member.log_file})")
    group.spawn(member)
    try:
        await group.wait_ready(timeout, [member])
    except LocalGroupError as exc:
        raise LocalGroupError(f"{exc}{not_ready_hint(member, group.directory)}") from None


async def _kill(member: LocalMember, pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while member.current_pid() == pid:
        if time.monotonic() > deadline:
            raise LocalGroupError(f"member {member.node_id} (pid {pid}) is still there {timeout:.0f} s after SIGKILL")
        await asyncio.sleep(0.02)
