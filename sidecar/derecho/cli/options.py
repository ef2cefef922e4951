"""Options several `derecho` commands share."""

from __future__ import annotations

from pathlib import Path

import click

LOCAL_GROUP_DIR = "./local-group"

local_group_dir = click.option(
    "--dir",
    "directory",
    default=LOCAL_GROUP_DIR,
    show_default=True,
    type=click.Path(path_type=Path),
    help="the local group's directory: member i lives in DIR/member-<i>/",
)

# How long `derecho add` and `derecho restart` wait for members to be admitted (and ready).
DEFAULT_JOIN_TIMEOUT = 60.0

join_wait = click.option(
    "--timeout",
    default=DEFAULT_JOIN_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="seconds to wait for the members to be admitted and ready",
)
