"""Fixtures for the `derecho` command-line tests: the command itself, and a running local group."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from derecho.localgroup import LocalGroup

START_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def derecho_command() -> list[str]:
    """The installed `derecho` entry point (next to this Python, else on PATH)."""
    beside = Path(sys.executable).with_name("derecho")
    found = str(beside) if beside.exists() else shutil.which("derecho")
    assert found, "the derecho command is not installed (pip install -e .)"
    return [found]


@pytest.fixture(scope="module")
def local_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGroup]:
    """A 3-member group in a temporary directory, stopped when the module is done.

    The members are processes, not tied to an event loop: they are started and stopped on
    loops of their own, and tests reach them through subprocesses or their own loops.
    """
    group = LocalGroup(tmp_path_factory.mktemp("cli-group"), 3)
    try:
        asyncio.run(group.start(START_TIMEOUT))
        yield group
    finally:
        codes = asyncio.run(group.stop())
    assert all(code == 0 for code in codes.values()), f"members exited with {codes}"
