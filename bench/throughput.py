"""Throughput and latency of a local derecho group, through the client API.

Starts a local group (real sidecar processes on 127.0.0.1) and one application process per
member. Every application sends `--count` messages (pipelined, at most `--window` without a
receipt) and reads every delivery of the shard; a member's rate is what its application
received divided by the time from the common start to its last delivery. Reported: the
minimum over members (every member delivers everything).

    python bench/throughput.py --size 100 --size 10240 --size 1048576
    python bench/throughput.py --latency
    python bench/throughput.py --size 100 --trace off --trace 0.01 --trace 1   # tracing cost
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from derecho.client import Client
from derecho.localgroup import LocalGroup, free_ports


def _app(
    socket: str, count: int, size: int, window: int, total: int, start_at: float, out: Any, trace: str, sink: str
) -> None:
    import uvloop

    if trace != "off":
        from opentelemetry import trace as otel
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

        provider = TracerProvider(sampler=TraceIdRatioBased(float(trace)))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink}/v1/traces")))
        otel.set_tracer_provider(provider)

    async def main() -> dict[str, Any]:
        client = await Client.connect(socket)
        stream = client.deliveries()
        payload = b"x" * size
        # All apps start sending at the same wall-clock moment.
        await asyncio.sleep(max(0.0, start_at - time.time()))
        began = time.time()

        async def send() -> None:
            inflight: list[asyncio.Future[Any]] = []
            for _ in range(count):
                inflight.append(client.submit(payload))
                if len(inflight) >= window:
                    await inflight[0]
                    inflight = [f for f in inflight if not f.done()]
                    await client.writable()
            if inflight:
                await asyncio.gather(*inflight)

        delivered = 0
        nbytes = 0
        sender = asyncio.create_task(send())
        while delivered < total:
            batch = await stream.next_batch()
            delivered += len(batch)
            nbytes += sum(map(len, batch.payloads))
        finished = time.time()
        await sender
        await client.close()
        return {"delivered": delivered, "bytes": nbytes, "seconds": finished - began}

    import os

    if os.environ.get("BENCH_PROFILE"):
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(uvloop.run, main())
        profiler.dump_stats(f"{os.environ['BENCH_PROFILE']}.app.{os.getpid()}")
        out.put(result)
        return
    out.put(uvloop.run(main()))


def measure(
    group: LocalGroup, size: int, count: int, window: int, trace: str = "off", sink: str = ""
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    members = len(group.members)
    total = count * members
    start_at = time.time() + 1.5  # time for the app processes to import and connect
    procs = [
        ctx.Process(target=_app, args=(str(m.socket), count, size, window, total, start_at, queue, trace, sink))
        for m in group.members
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    slowest = max(r["seconds"] for r in results)
    return {
        "size": size,
        "members": members,
        "messages_per_member": total,
        "msgs_per_s": total / slowest,
        "bytes_per_s": total * size / slowest,
        "seconds": slowest,
        "trace": trace,
    }


async def latency(group: LocalGroup, sends: int) -> dict[str, float]:
    client = await Client.connect(group.members[0].socket)
    samples = []
    for _ in range(50):  # warm up
        await client.send(b"x" * 100)
    for _ in range(sends):
        t0 = time.perf_counter()
        await client.send(b"x" * 100)
        samples.append(time.perf_counter() - t0)
    await client.close()
    samples.sort()
    return {
        "p50_ms": 1000 * samples[len(samples) // 2],
        "p99_ms": 1000 * samples[int(len(samples) * 0.99)],
        "mean_ms": 1000 * statistics.fmean(samples),
    }


@contextlib.contextmanager
def _sink(trace: str) -> Iterator[str]:
    """An OTLP receiver process on loopback while tracing is measured."""
    if trace == "off":
        yield ""
        return
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("otlp_sink.py")), "--port", str(port)])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def default_count(size: int) -> int:
    return max(200, min(200_000, 20_000_000 // max(size, 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--size", type=int, action="append", help="payload bytes (repeatable)")
    parser.add_argument("--count", type=int, help="messages per sending app (default: by size)")
    parser.add_argument("--window", type=int, default=4000, help="sends in flight per app")
    parser.add_argument("--latency", action="store_true", help="also measure one-in-flight 100 B latency")
    parser.add_argument(
        "--trace",
        action="append",
        help="off, or a sampling ratio (0.01, 1) for the apps' send spans; sidecars export OTLP to a local sink",
    )
    parser.add_argument(
        "--history-bytes", type=int, help="state.history_bytes of each member (default: the sidecar's, 256 MiB)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = args.size or [100, 10240, 1 << 20]
    results: list[dict[str, Any]] = []
    lat = None
    for trace in args.trace or ["off"]:
        with tempfile.TemporaryDirectory(prefix="derecho-bench-") as tmp, _sink(trace) as sink:
            env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink} if trace != "off" else None
            # A generous suspicion timeout: this measures throughput, and a member stalled by a
            # huge traced batch must not be taken for a failed one (bench/failover.py measures that).
            settings: dict[str, dict[str, object]] = {"membership": {"suspicion_timeout": 10.0}}
            if args.history_bytes is not None:
                settings["state"] = {"history_bytes": args.history_bytes}
            group = LocalGroup(Path(tmp), args.members, group="bench", log_level="warning", env=env, settings=settings)
            asyncio.run(group.start())
            try:
                for size in sizes:
                    window = args.window if size <= 16384 else max(4, (64 << 20) // size)
                    results.append(measure(group, size, args.count or default_count(size), window, trace, sink))
                if args.latency and lat is None:
                    lat = asyncio.run(latency(group, 2000))
            finally:
                asyncio.run(group.stop())
    if args.json:
        json.dump({"throughput": results, "latency": lat}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'size':>9} {'tracing':>8} {'msgs/s at every member':>24} {'MB/s':>10}")
    for r in results:
        print(f"{r['size']:>9} {r['trace']:>8} {r['msgs_per_s']:>24,.0f} {r['bytes_per_s'] / 1e6:>10,.1f}")
    if lat:
        print(f"latency 100 B, one in flight: p50 {lat['p50_ms']:.3f} ms, p99 {lat['p99_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
