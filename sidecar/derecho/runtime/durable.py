"""Durable small records (ragged trims, views): written whole, fsynced, then renamed into place."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def write_durably(path: Path, record: dict[str, Any]) -> None:
    """Write `record` as JSON so that after a crash the file is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per write: two writes of the same file never share a temporary.
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = json.dumps(record, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def prune_trims(directory: Path, before_vid: int) -> None:
    """Remove the ragged trims of views before `before_vid`: once the view after them is saved,
    nothing reads them again, and a long-lived member would otherwise keep one file per change."""
    for path in directory.glob("ragged_trim-v*-sg*-sh*.json"):
        vid = path.name.removeprefix("ragged_trim-v").split("-", 1)[0]
        if vid.isdigit() and int(vid) < before_vid:
            path.unlink(missing_ok=True)
