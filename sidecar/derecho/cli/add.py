"""`derecho add`: start new members that join a running local group."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..localgroup import MAX_MEMBERS, LocalGroup, LocalGroupError
from .contacts import (
    MAX_NODE_ID,
    ids_text,
    join_addresses,
    member_line,
    not_ready_hint,
    view_line,
)
from .options import join_wait, local_group_dir


@click.command()
@local_group_dir
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, MAX_MEMBERS), help="members to add")
@join_wait
def add(directory: Path, count: int, timeout: float) -> None:
    """Start new members that join the running group in DIR.

    They take the next free ids and new ports, and join through the running members. The
    `derecho up` running DIR reports them and stops them too at Ctrl-C.
    """
    try:
        old = LocalGroup.open(directory)
        new = asyncio.run(_add(old, count, timeout))
    except LocalGroupError as exc:
        click.echo(f"derecho add: {exc}", err=True)
        sys.exit(1)
    latest = max((m.status for m in new.new_members), key=lambda s: s["view"]["vid"])
    click.echo(f"{ids_text(new.new_members)} joined the group in {view_line(latest)}")
    for member in new.new_members:
        click.echo(member_line(member))


async def _add(old: LocalGroup, count: int, timeout: float) -> LocalGroup:
    first = max(m.node_id for m in old.members) + 1
    if first + count - 1 > MAX_NODE_ID:
        raise LocalGroupError(f"no free node ids left above {first - 1} (the largest is {MAX_NODE_ID})")
    contacts = await join_addresses(old, set(), "a new member")
    new = LocalGroup(
        old.directory,
        count,
        group=old.group,
        settings=old.settings,
        log_level=old.log_level,
        env=old.env,
        first_id=first,
        join=contacts,
        known=old.members,  # listed in the new configs; their ports are not handed out again
    )
    new.write_configs()
    click.echo(f"starting {ids_text(new.new_members)}; joining through {', '.join(contacts)}")
    for member in new.new_members:
        new.spawn(member)
    try:
        await new.wait_ready(timeout, new.new_members)
    except LocalGroupError as exc:
        hints = "".join(not_ready_hint(m, new.directory) for m in new.new_members if not m.status.get("ready"))
        raise LocalGroupError(f"{exc}{hints}") from None
    return new
