"""Physical-limit baseline: 3 processes all-to-all over loopback TCP, no protocol at all.

Each member is an OS process running an asyncio (uvloop) event loop. Every pair of members shares one TCP
connection (used in both directions). Every member multicasts a stream of fixed-size, length-prefixed messages
(4-byte big-endian length + payload) to both peers and parses the streams it receives. There is no ordering,
no acknowledgement and no copying of payloads into per-message objects: this is the best case a Python sidecar
could hope for on this machine, against which bench/throughput.py (the real Derecho group) can be compared.

A message counts as *delivered* at a member once it has been fully received there; each member also counts
its own messages as delivered to itself once the kernel has accepted them for both peers, mirroring a
multicast in which every member delivers every message. Rates are measured over a common window (after a
short warm-up) and the reported figure is the minimum over members.

Usage::

    python bench/raw_fanout.py                       # 100 B, 10 KiB, 1 MiB for 3 s each
    python bench/raw_fanout.py --seconds 5 --sizes 100,64KiB --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import socket
import struct
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, cast

from common import LOOPBACK, fmt_bytes, fmt_count, fmt_size, machine_info, parse_size, print_table, run_async

HDR = struct.Struct("!I")
DEFAULT_SIZES = (100, 10 * 1024, 1024 * 1024)
BLOCK_TARGET = 256 * 1024  # bytes handed to the transport per write() call (whole messages only)
PIPE_TIMEOUT = 30.0  # seconds to wait for a member's control message before giving up


class PeerProtocol(asyncio.Protocol):
    """One bidirectional peer connection: parses incoming frames, tracks outgoing bytes and flow control."""

    def __init__(self, high_water: int) -> None:
        self.high_water = high_water
        self.transport: asyncio.Transport | None = None
        self.msgs = 0  # fully received messages
        self.payload_bytes = 0  # payload bytes of fully received messages
        self.written = 0  # bytes handed to transport.write()
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False
        self._hdr = b""  # partial length prefix carried over between chunks (0..3 bytes)
        self._pending = False  # inside a message body
        self._need = 0  # body bytes still missing for the current message
        self._cur = 0  # body length of the current message

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop transports do not subclass asyncio's
        self.transport.set_write_buffer_limits(high=self.high_water)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # wake a sender waiting on flow control so it can notice

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        n = len(data)
        pos = 0
        msgs = 0
        nbytes = 0
        if self._hdr:
            take = 4 - len(self._hdr)
            hdr = self._hdr + data[:take]
            if len(hdr) < 4:
                self._hdr = hdr
                return
            self._hdr = b""
            pos = take
            self._cur = self._need = HDR.unpack(hdr)[0]
            self._pending = True
        if self._pending:
            need = self._need
            if n - pos < need:
                self._need = need - (n - pos)
                return
            pos += need
            self._pending = False
            msgs = 1
            nbytes = self._cur
        unpack_from = HDR.unpack_from
        while n - pos >= 4:
            (length,) = unpack_from(data, pos)
            pos += 4
            end = pos + length
            if end > n:
                self._pending = True
                self._need = end - n
                self._cur = length
                pos = n
                break
            pos = end
            msgs += 1
            nbytes += length
        if pos < n:
            self._hdr = data[pos:]
        self.msgs += msgs
        self.payload_bytes += nbytes

    def sent_frames(self, frame_len: int) -> int:
        """Whole frames already accepted by the kernel (handed to write() and no longer buffered)."""
        if self.transport is None:
            return 0
        return (self.written - self.transport.get_write_buffer_size()) // frame_len


async def _sender(peers: list[PeerProtocol], block: bytes, stop: asyncio.Event) -> None:
    """Multicast loop: each block goes to every peer; waits while any peer is above its high-water mark."""
    size = len(block)
    while not stop.is_set():
        for p in peers:
            if not p.writable.is_set():
                await p.writable.wait()
        if stop.is_set() or any(p.closed for p in peers):
            return
        for p in peers:
            assert p.transport is not None
            p.transport.write(block)
            p.written += size
        await asyncio.sleep(0)  # let the loop read; uvloop write() often completes synchronously


def _snapshot(peers: list[PeerProtocol], frame_len: int) -> tuple[float, float, int, int, int]:
    own = min(p.sent_frames(frame_len) for p in peers)
    return (
        time.monotonic(),
        time.process_time(),
        own,
        sum(p.msgs for p in peers),
        sum(p.payload_bytes for p in peers),
    )


async def _member_main(idx: int, n: int, size: int, warmup: float, seconds: float, ctl: Connection) -> None:
    loop = asyncio.get_running_loop()
    frame = HDR.pack(size) + b"\xa5" * size
    frames_per_block = max(1, BLOCK_TARGET // len(frame))
    block = frame * frames_per_block
    high_water = 4 * len(block)

    peers: list[PeerProtocol] = []
    all_connected = asyncio.Event()

    def make_peer() -> PeerProtocol:
        p = PeerProtocol(high_water)
        peers.append(p)
        if len(peers) == n - 1:
            all_connected.set()
        return p

    async def recv_ctl() -> Any:
        if not await loop.run_in_executor(None, ctl.poll, PIPE_TIMEOUT):
            raise TimeoutError(f"member {idx}: no control message from the parent")
        return ctl.recv()

    server = await loop.create_server(make_peer, LOOPBACK, 0)
    ctl.send(("port", server.sockets[0].getsockname()[1]))
    ports: list[int] = await recv_ctl()
    for j in range(idx):  # connect to lower-numbered members, accept from higher-numbered ones
        await loop.create_connection(make_peer, LOOPBACK, ports[j])
    if n > 1:
        await asyncio.wait_for(all_connected.wait(), PIPE_TIMEOUT)
    ctl.send(("ready", idx))
    start_at: float = await recv_ctl()
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))

    stop = asyncio.Event()
    send_task = asyncio.create_task(_sender(peers, block, stop)) if peers else None
    await asyncio.sleep(warmup)
    t0, c0, own0, rm0, rb0 = _snapshot(peers, len(frame))
    await asyncio.sleep(seconds)
    t1, c1, own1, rm1, rb1 = _snapshot(peers, len(frame))
    if send_task is not None and send_task.done():
        send_task.result()  # the sender must still be running; re-raise whatever stopped it
        raise RuntimeError(f"member {idx}: sender stopped early (a peer connection closed)")
    elapsed = t1 - t0
    own = own1 - own0
    recv_msgs = rm1 - rm0
    recv_bytes = rb1 - rb0
    ctl.send(
        (
            "result",
            {
                "member": idx,
                "elapsed": elapsed,
                "own_msgs": own,
                "recv_msgs": recv_msgs,
                "delivered_msgs": own + recv_msgs,
                "delivered_bytes": own * size + recv_bytes,
                "msgs_per_s": (own + recv_msgs) / elapsed,
                "bytes_per_s": (own * size + recv_bytes) / elapsed,
                "send_msgs_per_s": own / elapsed,
                "cpu": (c1 - c0) / elapsed,
            },
        )
    )
    # Keep sending until every member has closed its window, so nobody's tail is starved.
    await recv_ctl()
    stop.set()
    for p in peers:
        p.writable.set()
    if send_task is not None:
        await send_task
    server.close()
    for p in peers:
        if p.transport is not None:
            p.transport.abort()
    await asyncio.sleep(0)


def _member(idx: int, n: int, size: int, warmup: float, seconds: float, ctl: Connection) -> None:
    try:
        run_async(lambda: _member_main(idx, n, size, warmup, seconds, ctl))
    except BaseException:
        with contextlib.suppress(OSError):
            ctl.send(("error", f"member {idx}:\n{traceback.format_exc()}"))
        raise SystemExit(1) from None


def _expect(ctl: Connection, tag: str, timeout: float) -> Any:
    if not ctl.poll(timeout):
        raise TimeoutError(f"timed out waiting for {tag!r} from a member")
    kind, value = ctl.recv()
    if kind == "error":
        raise RuntimeError(value)
    if kind != tag:
        raise RuntimeError(f"expected {tag!r} from a member, got {kind!r}")
    return value


def measure(size: int, seconds: float, *, warmup: float = 0.3, members: int = 3) -> dict[str, Any]:
    """Run the all-to-all loopback fan-out for one payload size and return the delivered rates.

    Returns a dict with ``msgs_per_s`` and ``bytes_per_s`` (payload bytes; minimum over members),
    ``send_msgs_per_s`` (per-sender rate, minimum over members) and ``per_member`` details.
    """
    if size < 0 or size >= 1 << 32:
        raise ValueError("size must fit the 4-byte length prefix")
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    ctx = mp.get_context("fork")  # the member function may live in __main__; fork avoids re-import issues
    pipes = [ctx.Pipe() for _ in range(members)]
    procs = [
        ctx.Process(target=_member, args=(i, members, size, warmup, seconds, child), daemon=True)
        for i, (_, child) in enumerate(pipes)
    ]
    try:
        for p in procs:
            p.start()
        for _, child in pipes:
            child.close()
        ctls = [parent for parent, _ in pipes]
        ports = [_expect(c, "port", PIPE_TIMEOUT) for c in ctls]
        for c in ctls:
            c.send(ports)
        for c in ctls:
            _expect(c, "ready", PIPE_TIMEOUT)
        start_at = time.monotonic() + 0.2
        for c in ctls:
            c.send(start_at)
        results = [_expect(c, "result", warmup + seconds + PIPE_TIMEOUT) for c in ctls]
        for c in ctls:
            c.send("stop")
        for p in procs:
            p.join(10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
        for parent, _ in pipes:
            parent.close()
    return {
        "size": size,
        "seconds": seconds,
        "members": members,
        "msgs_per_s": min(r["msgs_per_s"] for r in results),
        "bytes_per_s": min(r["bytes_per_s"] for r in results),
        "send_msgs_per_s": min(r["send_msgs_per_s"] for r in results),
        "per_member": results,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement window per size (default 3)")
    ap.add_argument("--warmup", type=float, default=0.3, help="uncounted warm-up before the window (default 0.3)")
    ap.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated payload sizes, e.g. 100,10KiB,1MiB (default)",
    )
    ap.add_argument("--members", type=int, default=3, help="number of member processes (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = ap.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]

    machine = machine_info()  # sampled before the run: load from other processes skews the figures
    results = [measure(s, args.seconds, warmup=args.warmup, members=args.members) for s in sizes]
    if args.json:
        json.dump({"benchmark": "raw_fanout", "machine": machine, "results": results}, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"raw loopback fan-out: {args.members} processes, all-to-all TCP, {args.seconds:g} s window per size; {machine}"
    )
    rows = []
    for r in results:
        cpus = " ".join(f"{m['cpu']:.2f}" for m in r["per_member"])
        rows.append(
            [
                fmt_size(r["size"]),
                fmt_count(r["msgs_per_s"]),
                f"{fmt_bytes(r['bytes_per_s'])}/s",
                fmt_count(r["send_msgs_per_s"]),
                cpus,
            ]
        )
    print_table(["size", "delivered msg/s", "delivered bytes/s", "per-sender msg/s", "cpu/member"], rows)
    print("(delivered = per member, own + received, minimum over members; cpu = process CPU seconds per second)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
