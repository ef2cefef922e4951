"""Reference point: put throughput and latency of a 3-member etcd cluster on loopback.

Starts three ``etcd`` processes on 127.0.0.1 (free ports, separate data dirs in a fresh temporary directory),
waits until every member is healthy, then drives the v3 HTTP/JSON gateway (``POST /v3/kv/put`` with base64
keys and values) from this Python process with aiohttp:

* throughput: ``--concurrency`` puts in flight, spread round-robin over the three members, for ``--seconds``;
* latency: exactly one put in flight against the leader, for ``--seconds`` (at most ``--latency-ops`` puts).

etcd itself is not installed by this script: it uses ``$ETCD_BIN`` or ``etcd`` on ``PATH`` (Debian package
``etcd-server``) and prints a SKIP line when neither exists. Every loop is time- and count-bounded; the
cluster is always stopped and the temporary directory removed, also on errors and Ctrl-C.

Usage::

    python bench/etcd_compare.py
    python bench/etcd_compare.py --seconds 5 --concurrency 64 --data-root /dev/shm --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from common import (
    LOOPBACK,
    fmt_bytes,
    fmt_count,
    fmt_size,
    free_ports,
    machine_info,
    parse_size,
    percentile,
    print_table,
    run_async,
)

DEFAULT_SIZES = (100, 10 * 1024)
KEYSPACE = 1000  # distinct keys per value size; puts overwrite them round-robin
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
STOP_GRACE = 1.0  # etcd's graceful stop (leader transfer) can take ~7 s; the data is thrown away anyway


def find_etcd() -> str | None:
    """Path of the etcd server binary: ``$ETCD_BIN`` if set, else ``etcd`` on PATH, else None."""
    env = os.environ.get("ETCD_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child before exec
    """Ask Linux to SIGKILL the etcd child if this benchmark dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class EtcdCluster:
    """A throw-away etcd cluster on loopback. Use as a context manager (``with EtcdCluster(...) as c``)."""

    binary: str
    members: int = 3
    data_root: str | None = None
    tmpdir: Path | None = None
    client_urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> EtcdCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.tmpdir = Path(tempfile.mkdtemp(prefix="derecho-bench-etcd-", dir=self.data_root))
        ports = free_ports(2 * self.members)
        client_ports, peer_ports = ports[: self.members], ports[self.members :]
        names = [f"m{i}" for i in range(self.members)]
        peer_urls = [f"http://{LOOPBACK}:{p}" for p in peer_ports]
        self.client_urls = [f"http://{LOOPBACK}:{p}" for p in client_ports]
        initial = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
        token = f"derecho-bench-{uuid.uuid4().hex[:12]}"
        for i, name in enumerate(names):
            log = open(self.tmpdir / f"{name}.log", "wb")  # noqa: SIM115 - closed right after Popen
            with log:
                cmd = [
                    self.binary,
                    f"--name={name}",
                    f"--data-dir={self.tmpdir / name}",
                    f"--listen-client-urls={self.client_urls[i]}",
                    f"--advertise-client-urls={self.client_urls[i]}",
                    f"--listen-peer-urls={peer_urls[i]}",
                    f"--initial-advertise-peer-urls={peer_urls[i]}",
                    f"--initial-cluster={initial}",
                    "--initial-cluster-state=new",
                    f"--initial-cluster-token={token}",
                    "--logger=zap",
                    "--log-level=error",
                ]
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                    )
                )

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"etcd member m{i} exited with code {p.returncode}:\n{self.log_tail(i)}")

    def cpu_seconds(self) -> float | None:
        """User+system CPU seconds consumed so far by all etcd processes (Linux /proc), or None."""
        total = 0
        try:
            for p in self.procs:
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            return None
        return total / os.sysconf("SC_CLK_TCK")

    def log_tail(self, i: int, lines: int = 20) -> str:
        if self.tmpdir is None:
            return ""
        try:
            text = (self.tmpdir / f"m{i}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def put_bodies(size: int, keyspace: int = KEYSPACE) -> list[bytes]:
    """Pre-encoded JSON bodies for /v3/kv/put, one per key, all with the same ``size``-byte value."""
    value = _b64(bytes((i * 7 + 13) % 256 for i in range(size)))
    return [
        json.dumps({"key": _b64(f"bench/{size}/{k:06d}".encode()), "value": value}).encode() for k in range(keyspace)
    ]


class PutError(RuntimeError):
    pass


async def put(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(f"{url}/v3/kv/put", data=body, headers={"Content-Type": "application/json"}) as r:
        payload = await r.read()
        if r.status != 200:
            raise PutError(f"{url}: HTTP {r.status}: {payload[:200]!r}")
        if b'"error"' in payload or b'"code"' in payload:
            raise PutError(f"{url}: {payload[:200]!r}")


async def wait_ready(session: aiohttp.ClientSession, cluster: EtcdCluster, timeout: float) -> str:
    """Wait until every member reports healthy and agrees on a leader; return the leader's client URL."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            leader_ids: set[str] = set()
            ids: dict[str, str] = {}
            healthy = 0
            for url in cluster.client_urls:
                async with session.get(f"{url}/health") as r:
                    if r.status == 200 and (await r.json(content_type=None)).get("health") == "true":
                        healthy += 1
                async with session.post(f"{url}/v3/maintenance/status", json={}) as r:
                    status = await r.json(content_type=None)
                ids[str(status["header"]["member_id"])] = url
                leader_ids.add(str(status.get("leader", "0")))
            if healthy == len(cluster.client_urls) and len(leader_ids) == 1:
                (leader,) = leader_ids
                if leader in ids:
                    return ids[leader]
            last = f"{healthy} healthy, leaders seen: {sorted(leader_ids)}"
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"etcd cluster not ready after {timeout:g} s ({last})")


async def measure_throughput(
    session: aiohttp.ClientSession,
    urls: list[str],
    size: int,
    seconds: float,
    concurrency: int,
    cluster: EtcdCluster | None = None,
) -> dict[str, Any]:
    """``concurrency`` closed-loop workers, worker w talking to ``urls[w % len(urls)]``, for ``seconds``."""
    bodies = put_bodies(size)
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]

    async def worker(w: int, deadline: float, record: bool) -> None:
        url = urls[w % len(urls)]
        i = w
        while time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                await put(session, url, bodies[i % len(bodies)])
            except (PutError, aiohttp.ClientError, TimeoutError) as e:
                errors.append(str(e))
                if len(errors) > 100:
                    raise
                continue
            if record:
                latencies.append(time.perf_counter() - t)
                counter[0] += 1
            i += concurrency

    # Warm-up (uncounted): open the connections and let etcd settle.
    warm_deadline = time.monotonic() + min(0.5, seconds / 4)
    await asyncio.gather(*(worker(w, warm_deadline, False) for w in range(concurrency)))
    errors.clear()
    e0 = cluster.cpu_seconds() if cluster else None
    c0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.gather(*(worker(w, t0 + seconds, True) for w in range(concurrency)))
    elapsed = time.monotonic() - t0
    cpu = (time.process_time() - c0) / elapsed
    e1 = cluster.cpu_seconds() if cluster else None
    etcd_cpu = (e1 - e0) / elapsed if e0 is not None and e1 is not None else None
    ops = counter[0]
    if ops == 0:
        raise RuntimeError(f"no successful puts; first error: {errors[0] if errors else 'none'}")
    return {
        "concurrency": concurrency,
        "ops": ops,
        "errors": len(errors),
        "elapsed": elapsed,
        "ops_per_s": ops / elapsed,
        "bytes_per_s": ops * size / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu": cpu,
        "etcd_cpu": etcd_cpu,
    }


async def measure_latency(
    session: aiohttp.ClientSession, url: str, size: int, seconds: float, max_ops: int
) -> dict[str, Any]:
    """One put in flight at a time against ``url`` until ``seconds`` pass or ``max_ops`` puts are done."""
    bodies = put_bodies(size)
    for i in range(20):  # warm-up
        await put(session, url, bodies[i % len(bodies)])
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    i = 0
    while i < max_ops and time.monotonic() < deadline:
        t = time.perf_counter()
        await put(session, url, bodies[i % len(bodies)])
        latencies.append(time.perf_counter() - t)
        i += 1
    return {
        "ops": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "mean_ms": sum(latencies) / len(latencies) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


async def _run(
    cluster: EtcdCluster, sizes: list[int], seconds: float, concurrency: int, latency_ops: int
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency + 4, limit_per_host=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        leader = await wait_ready(session, cluster, STARTUP_TIMEOUT)
        results = []
        for size in sizes:
            tput = await measure_throughput(session, cluster.client_urls, size, seconds, concurrency, cluster)
            cluster.check_alive()
            lat = await measure_latency(session, leader, size, seconds, latency_ops)
            cluster.check_alive()
            results.append({"size": size, "throughput": tput, "latency": lat})
        return {"leader": leader, "results": results}


def compare(
    sizes: list[int] | None = None,
    seconds: float = 3.0,
    *,
    concurrency: int = 32,
    latency_ops: int = 5000,
    members: int = 3,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Start a cluster, measure every size, stop it. Returns ``{"skipped": reason}`` if etcd is missing."""
    binary = find_etcd()
    if binary is None:
        return {
            "benchmark": "etcd_compare",
            "skipped": "etcd not found (install Debian package etcd-server, or set ETCD_BIN)",
        }
    if seconds <= 0 or concurrency < 1 or latency_ops < 1:
        raise ValueError("seconds, concurrency and latency_ops must be positive")
    sizes = list(sizes or DEFAULT_SIZES)
    machine = machine_info()  # sampled before the run: load from other processes skews the figures
    with EtcdCluster(binary, members=members, data_root=data_root) as cluster:
        assert cluster.tmpdir is not None
        data_dir = str(cluster.tmpdir)
        out = run_async(lambda: _run(cluster, sizes, seconds, concurrency, latency_ops))
    return {
        "benchmark": "etcd_compare",
        "etcd": binary,
        "etcd_version": etcd_version(binary),
        "members": members,
        "data_dir": data_dir,
        "seconds": seconds,
        "concurrency": concurrency,
        "machine": machine,
        **out,
    }


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the cluster is cleaned up when the script is killed politely."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement (default 3)")
    ap.add_argument("--sizes", default="100,10KiB", help="comma-separated value sizes (default 100,10KiB)")
    ap.add_argument("--concurrency", type=int, default=32, help="puts in flight for throughput (default 32)")
    ap.add_argument("--latency-ops", type=int, default=5000, help="max puts for the latency run (default 5000)")
    ap.add_argument("--data-root", default=None, help="parent dir for the temp data dirs (e.g. /dev/shm)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]

    try:
        with _sigterm_as_interrupt():
            res = compare(
                sizes,
                args.seconds,
                concurrency=args.concurrency,
                latency_ops=args.latency_ops,
                data_root=args.data_root,
            )
    except KeyboardInterrupt:
        print("etcd_compare: interrupted; cluster stopped and temp dir removed", file=sys.stderr)
        return 130
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
        return 0
    if "skipped" in res:
        print(f"SKIP etcd_compare: {res['skipped']}")
        return 0
    print(
        f"etcd {res['etcd_version']}: {res['members']} members on loopback, data in {Path(res['data_dir']).parent}, "
        f"{res['seconds']:g} s per measurement; {res['machine']}"
    )
    rows = []
    for r in res["results"]:
        t, lat = r["throughput"], r["latency"]
        rows.append(
            [
                fmt_size(r["size"]),
                fmt_count(t["ops_per_s"]),
                f"{fmt_bytes(t['bytes_per_s'])}/s",
                f"{t['p50_ms']:.2f}/{t['p99_ms']:.2f}",
                f"{t['client_cpu']:.2f}",
                "-" if t["etcd_cpu"] is None else f"{t['etcd_cpu']:.2f}",
                f"{lat['p50_ms']:.2f}",
                f"{lat['p99_ms']:.2f}",
                str(t["errors"]),
            ]
        )
    c = res["concurrency"]
    print_table(
        [
            "size",
            f"puts/s (c={c})",
            "value bytes/s",
            "loaded p50/p99 ms",
            "client cpu",
            "etcd cpu",
            "p50 ms (1 in flight)",
            "p99 ms (1 in flight)",
            "errors",
        ],
        rows,
    )
    print(
        "(throughput: closed loop spread over all members; cpu = cores busy during it (this Python client, all etcd"
        " processes); single-put latency measured against the leader)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
