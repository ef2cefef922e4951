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
