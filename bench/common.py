"""Shared helpers for the benchmark scripts in bench/.

The scripts are run directly (``python bench/raw_fanout.py``), so ``bench/`` is on ``sys.path`` and they
import this module as ``common``.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Callable, Coroutine, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """Return ``n`` distinct TCP ports that were free on ``host`` a moment ago.

    All sockets are held open until every port is chosen, so the ports are distinct. Another process can
    still grab one before the caller binds it; callers that can should bind port 0 themselves instead.
    """
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(n):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def free_port(host: str = LOOPBACK) -> int:
    """Return one TCP port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def percentile(values: Sequence[float], p: float) -> float:
    """Percentile ``p`` (0..100) of ``values`` with linear interpolation between closest ranks.

    Matches ``numpy.percentile(values, p)`` (the default "linear" method). Raises ValueError on empty input.
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    data = sorted(values)
    rank = (len(data) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(data[lo])
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def fmt_count(x: float) -> str:
    """Human-readable rate/count with a k/M/G suffix (powers of 1000)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.1f}"


def fmt_bytes(x: float) -> str:
    """Human-readable byte amount with a binary suffix."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def fmt_size(n: int) -> str:
    """Payload size label: 100 -> '100 B', 10240 -> '10 KiB', 1048576 -> '1 MiB'."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def parse_size(text: str) -> int:
    """Parse '100', '100B', '10KiB', '10k', '1MiB', '1m' into a byte count (binary multiples)."""
    s = text.strip().lower().replace(" ", "")
    for suffix, mult in (("kib", 1 << 10), ("mib", 1 << 20), ("kb", 1 << 10), ("mb", 1 << 20)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * mult)
    if s.endswith("k"):
        return int(float(s[:-1]) * (1 << 10))
    if s.endswith("m"):
        return int(float(s[:-1]) * (1 << 20))
    if s.endswith("b"):
        s = s[:-1]
    return int(s)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render a plain-text table; numeric-looking cells are right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def numeric(text: str) -> bool:
        return bool(text) and (text[0].isdigit() or text[0] in "-+.")

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(headers, rows))


def machine_info() -> str:
    """Short description of the CPU situation, e.g. '2 cpus, load 1.20/0.80/0.50' (others' load skews results)."""
    try:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} cpus, load {load}"


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on uvloop when it is installed, otherwise on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency on Linux
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
