"""Helpers for the `derecho` command tests: running the command, and `derecho up` as a child
process whose output is read line by line.

Waits poll for an event with a deadline (a line printed, a process gone); the deadline only
bounds a hang and is never a claim about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEADLINE = 60.0  # `derecho up --members 9` starts nine Python processes on a small machine
# A joiner keeps asking for up to its join_timeout (120 s by default) before it gives up.
JOIN_DEADLINE = 150.0

MEMBER_LINE = re.compile(r"  member (\d+): socket (\S+)  http http://\S+  pid (\d+)")
VIEW_LINE = re.compile(r"view (\d+): members \[([\d, ]*)\]")


def view_members(line: str) -> list[int] | None:
    """The members (sorted) of a `view N: members [...]` line, else None."""
    found = VIEW_LINE.match(line)
    return sorted(int(n) for n in found[2].split(",") if n.strip()) if found else None


def run(command: list[str], *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, check=False)


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def status(command: list[str], member_dir: Path) -> dict[str, Any] | None:
    """`derecho status --json` of the member in `member_dir`, or None if it does not answer."""
    result = run(command, "status", "--socket", str(member_dir / "derecho.sock"), "--json", timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else None


class Up:
    """`derecho up` as a child process, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process, directory: Path) -> None:
        self.process = process
        self.directory = directory
        self.lines: list[str] = []

    @classmethod
    async def start(cls, command: list[str], directory: Path, members: int, *options: str) -> Up:
        process = await asyncio.create_subprocess_exec(
            *command,
            "up",
            "--members",
            str(members),
            "--dir",
            str(directory),
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process, directory)

    async def read_until(self, last: str | re.Pattern[str], timeout: float = DEADLINE) -> list[str]:
        """Read lines until one equals `last` (or, for a pattern, matches it from its start)."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError("`derecho up` ended its output early:\n" + "\n".join(self.lines))
                self.lines.append(raw.decode().rstrip("\n"))
                line = self.lines[-1]
                if line == last if isinstance(last, str) else last.match(line):
                    return self.lines

    def mark(self) -> int:
        """Where the output read so far ends: `expect(..., since=mark)` looks only after it."""
        return len(self.lines)

    async def expect(self, pattern: str, since: int = 0, timeout: float = DEADLINE) -> str:
        """The first line from `since` on that `pattern` matches (searched), reading on as needed.
        The lines `up` prints about one event may come in either order, so this looks back too."""
        regex = re.compile(pattern)
        return await self.expect_line(lambda line: regex.search(line) is not None, pattern, since, timeout)

    async def expect_view(self, members: list[int], since: int = 0, timeout: float = DEADLINE) -> str:
        """The first line from `since` on reporting a view of exactly `members` (in any rank order:
        joiners come last, in the order they were admitted)."""
        return await self.expect_line(
            lambda line: view_members(line) == sorted(members), f"view {members}", since, timeout
        )

    async def expect_line(self, test: Callable[[str], bool], what: str, since: int, timeout: float) -> str:
        checked = since
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[checked:]:
                    if test(line):
                        return line
                checked = max(checked, len(self.lines))
                raw = await self.process.stdout.readline()
                if not raw:
                    raise AssertionError(f"`derecho up` ended its output before {what}:\n" + "\n".join(self.lines))
                self.lines.append(raw.decode().rstrip("\n"))

    async def finish(self) -> tuple[int, list[str]]:
        async with asyncio.timeout(DEADLINE):
            rest, _ = await self.process.communicate()
        self.lines.extend(rest.decode().splitlines())
        return self.process.returncode, self.lines

    async def terminate(self, stopped: str | None = None) -> list[str]:
        """SIGTERM `derecho up`: it exits 0, printing the `stopped: ...` line if one is given."""
        self.process.send_signal(signal.SIGTERM)
        code, lines = await self.finish()
        assert code == 0, "\n".join(lines)
        if stopped is not None:
            assert f"stopped: {stopped}" in lines, "\n".join(lines)
        return lines

    def member_pids(self) -> list[int]:
        pids = []
        for pid_file in self.directory.glob("member-*/sidecar.pid"):
            with contextlib.suppress(ValueError, FileNotFoundError):
                pids.append(int(pid_file.read_text()))
        return pids

    async def cleanup(self, pids: list[int]) -> None:
        """Whatever a failed test left running: `derecho up` itself, then its members."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        for pid in set(pids) | set(self.member_pids()):
            if running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
