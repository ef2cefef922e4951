"""`derecho signal`: send a signal to a member of a local group, to watch the group react."""

from __future__ import annotations

import os
import signal as signals
import sys
from pathlib import Path

import click

from .options import local_group_dir

NAMES = {"kill": signals.SIGKILL, "stop": signals.SIGSTOP, "cont": signals.SIGCONT, "term": signals.SIGTERM}


@click.command(name="signal")
@local_group_dir
@click.option("--member", required=True, type=click.IntRange(0), help="member number")
@click.argument("name", type=click.Choice(sorted(NAMES)))
def signal_member(directory: Path, member: int, name: str) -> None:
    """Send NAME to a member: kill (a crash), stop/cont (a pause), term (a graceful leave)."""
    pid_file = directory / f"member-{member}" / "sidecar.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        click.echo(f"derecho signal: no {pid_file}; is member {member} of the group in {directory} running?", err=True)
        sys.exit(1)
    except ValueError:
        click.echo(f"derecho signal: {pid_file} does not hold a process id", err=True)
        sys.exit(1)
    try:
        os.kill(pid, NAMES[name])
    except ProcessLookupError:
        click.echo(f"derecho signal: member {member} (pid {pid}) is not running; remove the stale {pid_file}", err=True)
        sys.exit(1)
    click.echo(f"sent SIG{name.upper()} to member {member} (pid {pid})")
