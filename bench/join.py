"""Joining a running group: the time to admit a member that needs 100 MiB of state.

Each run starts a local group (3 sidecar processes on 127.0.0.1), fills the shard's delivered
history with `--state-mb` MiB through the client API (messages of `--size` bytes from member 0's
application), checks every member's `status()["history"]["0/0"]`, then spawns a new sidecar
process that joins through member 1 (it is redirected to the leader, member 0). Measured from
the spawn (`Popen`):

- **admitted**: member 0's application sees a view that lists the joiner (`Client.views()`);
- **ready**: the joiner's `status()` says `ready: true`: it is connected to every member and
  holds the shard's history (checked: the same bytes and message count as the leader, complete);
- **replay**: then an application on the joiner reads the whole history with
  `deliveries(replay=True)` (time from subscribing to the last replayed message).

The peers, measured in the same run: the same join into a second, fresh group with an empty
history (the fixed cost of a join), a fresh 1-member sidecar (spawn to ready: process start-up),
`python -c "import ..."` (interpreter and imports alone), and moving the same number of bytes
over one raw TCP connection on loopback between two processes (the physical floor of the state
transfer), once into one reused buffer and once into a new buffer per write that is kept, as the
joiner keeps its state. The joiner and the leader log in JSON at info level, so each join is also broken
down by their log lines (ms resolution, wall clock): process up, JOIN at the leader, view
installed there, WELCOME at the joiner, connected, state in.

With `--load RATE`, the three members' applications (one helper process) send 100 B messages at
RATE msgs/s in total while both joins are measured (and 1 s after), counting member 0's deliveries
per 10 ms: the rate before, during and after each join and the longest stretch without a delivery
show how long the group stalls. The history then keeps growing during the join, and replay reads
what the joiner held when it became ready.

    python bench/join.py                                  # 100 MiB in 1 MiB messages, 3 runs
    python bench/join.py --state-mb 100 --size 64KiB --runs 5
    python bench/join.py --load 20000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import multiprocessing as mp
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from common import fmt_bytes, fmt_size, machine_info, parse_size, print_table, run_async
from derecho.client import Client
from derecho.localgroup import LocalGroup, LocalMember, free_ports

MiB = 1 << 20
DEADLINE = 180.0
POLL = 0.005
TICK = 0.01  # resolution of the delivery counts under --load
# The imports a sidecar process does before it can serve (`python -m derecho sidecar`).
SIDECAR_IMPORTS = "import derecho.cli.main, derecho.runtime.sidecar, derecho.api.http, uvloop"

# Joiner and leader log lines that mark the steps of a join (substring -> step name).
JOINER_EVENTS = {
    "joins its group through": "joiner_up",
    "admitted in view": "welcome",
    "the group is ready": "connected",
    "received the state of shard": "state_in",
}
LEADER_EVENTS = {
    "asks to join": "join_at_leader",
    "installed view": "view_at_leader",
    "the state of shard": "state_queued",  # "sending member N the state of shard ...", right after the install
    "the history of shard": "state_queued",
}


def group_settings(state_bytes: int) -> dict[str, Any]:
    """Every member's settings: generous failure detection (this measures joins, not failures on a
    busy 2-core machine), a history limit the state fits in, JSON logs with the join steps."""
    return {
        "membership": {"suspicion_timeout": 10.0, "heartbeat_interval": 0.1},
        "state": {"history_bytes": max(256 * MiB, 2 * state_bytes + 64 * MiB)},
        "log": {"format": "json", "modules": {"derecho.runtime.sidecar": "info"}},
    }


# -- the peers outside the group ------------------------------------------------------------------


def _raw_receiver(listener: socket.socket, nbytes: int, chunk: int, fresh: bool) -> None:
    conn, _ = listener.accept()
    kept: list[bytearray] = []
    buf = bytearray(chunk)
    view = memoryview(buf)
    got = filled = 0
    while got < nbytes:
        if fresh and filled == len(buf):
            # A new buffer per chunk, all kept: what a joiner does with the state it receives.
            kept.append(buf)
            buf = bytearray(min(chunk, nbytes - got))
            view = memoryview(buf)
            filled = 0
        n = conn.recv_into(view[filled:] if fresh else view)
        if n == 0:
            raise ConnectionError("raw sender closed early")
        got += n
        filled += n
    conn.sendall(b"k")
    conn.close()


def raw_tcp_seconds(nbytes: int, chunk: int, *, fresh: bool = False) -> float:
    """Seconds to move `nbytes` from this process to a new one over one loopback TCP connection, in
    `chunk`-sized writes, until the receiver has read them all and said so (one byte back). The
    receiver reads into one reused buffer, or with `fresh` into a new buffer per chunk that it keeps
    (first-touch page faults included, as for a joiner that holds the state in memory)."""
    ctx = mp.get_context("fork")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    receiver = ctx.Process(target=_raw_receiver, args=(listener, nbytes, chunk, fresh), daemon=True)
    receiver.start()
    listener.close()
    payload = memoryview(bytes(chunk))
    try:
        with socket.create_connection(("127.0.0.1", port)) as sender:
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            began = time.perf_counter()
            left = nbytes
            while left > 0:
                n = min(left, chunk)
                sender.sendall(payload[:n])
                left -= n
            if sender.recv(1) != b"k":
                raise ConnectionError("raw receiver did not confirm")
            return time.perf_counter() - began
    finally:
        receiver.join(10)


def import_seconds(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - began


# -- helpers on members ---------------------------------------------------------------------------


def _log_tail(member: LocalMember, lines: int = 15) -> str:
    try:
        return "\n".join(member.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


async def connect_when_up(member: LocalMember, deadline: float) -> tuple[float, Client]:
    """Connect to a member's socket as soon as it accepts; (monotonic time connected, client)."""
    while True:
        if member.process is not None and member.process.poll() is not None:
            raise RuntimeError(
                f"member {member.node_id} exited with code {member.process.returncode}:\n{_log_tail(member)}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"member {member.node_id}'s socket did not accept in time:\n{_log_tail(member)}")
        if member.socket.exists():
            try:
                client = await Client.connect(member.socket, timeout=1.0)
            except Exception:
                pass
            else:
                return time.monotonic(), client
        await asyncio.sleep(POLL)


async def wait_ready(member: LocalMember, client: Client, deadline: float) -> tuple[float, dict[str, Any]]:
    """Poll the member's status every POLL s until it is ready; (monotonic time, status)."""
    while True:
        doc = await client.status()
        if doc.get("ready"):
            return time.monotonic(), doc
        if member.process is not None and member.process.poll() is not None:
            raise RuntimeError(f"member {member.node_id} exited while joining:\n{_log_tail(member)}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"member {member.node_id} not ready (waiting for {doc.get('waiting_for')}):\n{_log_tail(member)}"
            )
        await asyncio.sleep(POLL)


def log_events(path: Path, events: dict[str, str], since: float) -> dict[str, float]:
    """Seconds from `since` (wall clock) to the first JSON log line containing each event's text."""
    found: dict[str, float] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return found
    for line in lines:
        try:
            entry = json.loads(line)
            ts = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        if ts < since - 0.001:
            continue
        for text, name in events.items():
            if text in str(entry.get("msg", "")) and name not in found:
                found[name] = ts - since
    return found


def history_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc.get("history", {}).get("0/0", {})


# -- filling the history --------------------------------------------------------------------------


async def fill(group: LocalGroup, state_bytes: int, size: int) -> dict[str, Any]:
    """Send `state_bytes` in `size`-byte messages from member 0's app; wait until every member's
    history holds them. Returns the fill time and the leader's history entry."""
    count = max(1, math.ceil(state_bytes / size))
    window = max(4, (64 * MiB) // size) if size > 16384 else 4000
    payload = bytes(size)
    clients = [await Client.connect(m.socket) for m in group.members]
    try:
        began = time.monotonic()
        inflight: list[asyncio.Future[Any]] = []
        for _ in range(count):
            inflight.append(clients[0].submit(payload))
            if len(inflight) >= window:
                await inflight[0]
                inflight = [f for f in inflight if not f.done()]
                await clients[0].writable()
        await asyncio.gather(*inflight)
        sent = time.monotonic() - began
        deadline = time.monotonic() + DEADLINE
        while True:
            docs = [await c.status() for c in clients]
            if all(history_of(d).get("bytes", 0) >= count * size for d in docs):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"histories did not reach {count * size} bytes: {[history_of(d) for d in docs]}")
            await asyncio.sleep(0.02)
        histories = [history_of(d) for d in docs]
        if len({(h["bytes"], h["messages"]) for h in histories}) != 1 or not all(h["complete"] for h in histories):
            raise RuntimeError(f"members' histories differ after the fill: {histories}")
        return {"fill_s": sent, "history": histories[0], "messages": count}
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()


# -- background load ------------------------------------------------------------------------------


def _load_app(sockets: list[str], rate: float, started: Any, stop: Any, out: Any) -> None:
    """Send `rate` msgs/s of 100 B in total through every member's app; count what member 0's app
    is delivered per TICK of wall-clock time (to see the group stall while a member joins)."""
    import uvloop

    async def main() -> dict[str, Any]:
        clients = [await Client.connect(s) for s in sockets]
        stream = clients[0].deliveries()
        buckets: dict[int, int] = {}

        async def count() -> None:
            while True:
                batch = await stream.next_batch()
                if not len(batch):
                    return
                slot = int(time.time() / TICK)
                buckets[slot] = buckets.get(slot, 0) + len(batch)

        counter = asyncio.create_task(count())
        payload = b"l" * 100
        per_tick = max(1, round(rate * 0.01 / len(clients)))
        inflight: list[asyncio.Future[Any]] = []
        sent = 0
        started.set()
        next_tick = time.monotonic()
        while not stop.is_set():
            for c in clients:
                inflight.extend(c.submit(payload) for _ in range(per_tick))
                sent += per_tick
            inflight = [f for f in inflight if not f.done()]
            if len(inflight) > 20_000:  # the group does not keep up: wait rather than pile up
                await inflight[0]
            next_tick = max(next_tick + 0.01, time.monotonic() - 0.1)
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*inflight), 10)
        counter.cancel()
        for c in clients:
            await c.close()
        return {"sent": sent, "buckets": buckets}

    out.put(uvloop.run(main()))


class Load:
    """`rate` msgs/s of 100 B in total from the members' apps, in a helper process, while open;
    afterwards `buckets` holds member 0's deliveries per TICK (keyed by wall-clock time / TICK)."""

    def __init__(self, group: LocalGroup, rate: float) -> None:
        self.rate = rate
        self.sockets = [str(m.socket) for m in group.members]
        self.proc: Any = None
        self.began = 0.0
        self.ended = 0.0
        self.sent = 0
        self.buckets: dict[int, int] = {}

    def __enter__(self) -> Load:
        if self.rate <= 0:
            return self
        ctx = mp.get_context("spawn")
        self.started, self.stop, self.out = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_load_app, args=(self.sockets, self.rate, self.started, self.stop, self.out))
        self.proc.start()
        if not self.started.wait(60):
            raise TimeoutError("the load process did not start")
        self.began = time.monotonic()
        time.sleep(1.0)  # let the rate settle before the join
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.stop.set()
        self.ended = time.monotonic()
        with contextlib.suppress(Exception):
            done = self.out.get(timeout=30)
            self.sent, self.buckets = done["sent"], done["buckets"]
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()

    @property
    def achieved(self) -> float:
        return self.sent / max(1e-9, self.ended - self.began) if self.proc is not None else 0.0


def delivery_dip(buckets: dict[int, int], start: float, end: float) -> dict[str, Any]:
    """Member 0's delivery rate in the second before `start` (wall clock), from `start` to `end` and in
    the second after `end`; the longest stretch without any delivery from `start` to `end` + 0.5 s;
    and the rate per 100 ms from 0.5 s before `start` to 1 s after `end`."""

    def rate(a: float, b: float) -> float:
        n = sum(buckets.get(s, 0) for s in range(int(a / TICK), int(b / TICK)))
        return n / max(TICK, b - a)

    longest = run = 0
    for slot in range(int(start / TICK), int((end + 0.5) / TICK)):
        run = 0 if buckets.get(slot, 0) else run + 1
        longest = max(longest, run)
    per_100ms = [rate(t, t + 0.1) for t in (start - 0.5 + 0.1 * i for i in range(int((end - start + 1.5) / 0.1)))]
    return {
        "rate_before": rate(start - 1.0, start),
        "rate_during": rate(start, end),
        "rate_after": rate(end, end + 1.0),
        "longest_gap_s": longest * TICK,
        "rate_per_100ms_from_minus_0_5_s": per_100ms,
    }


# -- one join -------------------------------------------------------------------------------------


def joiner_for(group: LocalGroup, node_id: int, contact: LocalMember) -> LocalMember:
    """A new member's directory and config: it joins `group` through `contact` (membership.join)."""
    (port,) = free_ports(1)
    member = LocalMember(node_id, group.directory / f"member-{node_id}", port)
    member.directory.mkdir(parents=True, exist_ok=True)
    config = group.config_for(member)
    config["members"] = [{"id": node_id, "address": f"127.0.0.1:{port}"}]
    config.setdefault("membership", {})["join"] = [f"127.0.0.1:{contact.peer_port}"]
    config["log"] = {"level": "info", "format": "json"}
    member.config_path.write_text(tomli_w.dumps(config))
    return member


async def join_once(group: LocalGroup, *, replay: bool, exact: bool = True) -> dict[str, Any]:
    """Spawn a joiner (through member 1) and time it: admitted, socket up, ready, replay read.

    The joiner's history must be complete and hold what the leader held before the spawn: exactly
    (bytes and messages) when nothing is sent meanwhile (`exact`), at least as many bytes otherwise."""
    leader = group.members[0]
    node_id = max(m.node_id for m in group.members) + 1
    joiner = joiner_for(group, node_id, group.members[1])
    watcher = await Client.connect(leader.socket)
    views = watcher.views()
    await views.__anext__()  # the current view
    leader_doc = await watcher.status()
    group.members.append(joiner)  # group.stop() stops it too

    async def admitted() -> float:
        async for change in views:
            if node_id in change.members:
                return time.monotonic()
        raise RuntimeError("the leader's view stream ended before the joiner was admitted")

    wall = time.time()
    began = time.monotonic()
    joiner_events = {**JOINER_EVENTS, f"connected to peer {leader.node_id}": "leader_link"}
    deadline = began + DEADLINE
    group.spawn(joiner)
    client: Client | None = None
    try:
        admission = asyncio.create_task(admitted())
        socket_at, client = await connect_when_up(joiner, deadline)
        ready_at, doc = await wait_ready(joiner, client, deadline)
        async with asyncio.timeout(DEADLINE):
            admitted_at = await admission
        mine, theirs = history_of(doc), history_of(leader_doc)
        result: dict[str, Any] = {
            "spawn_wall": wall,
            "ready_wall": wall + (ready_at - began),
            "admitted_s": admitted_at - began,
            "socket_s": socket_at - began,
            "ready_s": ready_at - began,
            "history": mine,
            "leader_history": theirs,
            "state_ok": bool(mine.get("complete"))
            and (
                (mine.get("bytes"), mine.get("messages")) == (theirs.get("bytes"), theirs.get("messages"))
                if exact
                else mine.get("bytes", -1) >= theirs.get("bytes", 0)
            ),
        }
        if replay:
            want = mine.get("messages", 0)
            stream = client.deliveries(replay=True)
            t0 = time.monotonic()
            got = nbytes = 0
            async with asyncio.timeout(DEADLINE):
                while got < want:
                    batch = await stream.next_batch()
                    got += len(batch)
                    nbytes += sum(map(len, batch.payloads))
            result["replay_s"] = time.monotonic() - t0
            result["replay_bytes"] = nbytes
    finally:
        for c in (client, watcher):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()
    steps = log_events(joiner.log_file, joiner_events, wall)
    steps.update(log_events(leader.log_file, LEADER_EVENTS, wall))
    result["steps"] = steps
    return result


async def sidecar_start_seconds(directory: Path) -> float:
    """Spawn to ready of a fresh 1-member group (no peers: ready once it serves)."""
    group = LocalGroup(directory, 1, group="bench-floor", log_level="warning")
    group.write_configs()
    member = group.members[0]
    began = time.monotonic()
    group.spawn(member)
    try:
        _, client = await connect_when_up(member, began + DEADLINE)
        try:
            ready_at, _ = await wait_ready(member, client, began + DEADLINE)
        finally:
            await client.close()
        return ready_at - began
    finally:
        await group.stop()


async def one_run(tmp: Path, members: int, state_bytes: int, size: int, replay: bool, load: float) -> dict[str, Any]:
    run: dict[str, Any] = {"sidecar_start_s": await sidecar_start_seconds(tmp / "floor")}
    for label, nbytes in (("empty", 0), ("state", state_bytes)):
        group = LocalGroup(
            tmp / label, members, group=f"bench-join-{label}", log_level="warning", settings=group_settings(nbytes)
        )
        await group.start()
        try:
            if nbytes:
                run["fill"] = await fill(group, nbytes, size)
            with Load(group, load) as background:
                run[label] = await join_once(group, replay=replay, exact=not load)
                if load:
                    await asyncio.sleep(1.0)  # the rate after the join, for the dip
            if load:
                run[label]["load_msgs_per_s"] = background.achieved
                run[label]["dip"] = delivery_dip(background.buckets, run[label]["spawn_wall"], run[label]["ready_wall"])
        finally:
            await group.stop()
    return run


# -- the whole measurement ------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _steps(run: dict[str, Any]) -> dict[str, float]:
    """Durations between the logged steps of one join (missing steps leave their figure out)."""
    t = run["steps"]
    spans = {
        "process_up_s": ("", "joiner_up"),  # spawn -> the joiner's first log line (interpreter + imports)
        "admission_s": ("joiner_up", "welcome"),  # JOIN, redirect, view change, WELCOME
        "start_after_welcome_s": ("welcome", "leader_link"),  # Sidecar built and started, link to the leader
        "transfer_s": ("leader_link", "state_in"),  # the state over the leader's link, appended to the history
    }
    out: dict[str, float] = {}
    for name, (a, b) in spans.items():
        if (a == "" or a in t) and b in t:
            out[name] = t[b] - (t[a] if a else 0.0)
    return out


def measure(
    state_bytes: int, size: int, *, runs: int = 3, members: int = 3, replay: bool = True, load: float = 0.0
) -> dict[str, Any]:
    machine = machine_info()
    raw: list[float] = []
    raw_fresh: list[float] = []
    python: list[float] = []
    imports: list[float] = []
    results: list[dict[str, Any]] = []
    for _ in range(runs):
        python.append(import_seconds("pass"))
        imports.append(import_seconds(SIDECAR_IMPORTS))
        raw.append(raw_tcp_seconds(state_bytes, min(size, MiB)))
        raw_fresh.append(raw_tcp_seconds(state_bytes, min(size, MiB), fresh=True))
        with tempfile.TemporaryDirectory(prefix="derecho-bench-join-") as tmp:
            results.append(run_async(functools.partial(one_run, Path(tmp), members, state_bytes, size, replay, load)))
    figures: dict[str, list[float]] = {
        "fill_s": [r["fill"]["fill_s"] for r in results],
        "sidecar_start_s": [r["sidecar_start_s"] for r in results],
        "python_start_s": python,
        "sidecar_imports_s": imports,
        "raw_tcp_s": raw,
        "raw_tcp_fresh_s": raw_fresh,
        # What the state adds to spawn -> ready; start-up noise (about ±0.3 s on a busy machine) is in it.
        "state_extra_s": [r["state"]["ready_s"] - r["empty"]["ready_s"] for r in results],
    }
    for label in ("state", "empty"):
        for key in ("admitted_s", "ready_s"):
            figures[f"{label}_{key}"] = [r[label][key] for r in results]
        for name in ("process_up_s", "admission_s", "start_after_welcome_s", "transfer_s"):
            values = [v for r in results if (v := _steps(r[label]).get(name)) is not None]
            if values:
                figures[f"{label}_{name}"] = values
        if load:
            for key in ("rate_before", "rate_during", "rate_after", "longest_gap_s"):
                figures[f"{label}_load_{key}"] = [r[label]["dip"][key] for r in results]
    if replay:
        figures["replay_s"] = [r["state"]["replay_s"] for r in results]
    stats = {k: summary(v) for k, v in figures.items()}
    med = {k: v["median"] for k, v in stats.items()}
    ratios = {
        "ready_vs_empty_ready": med["state_ready_s"] / med["empty_ready_s"],
        "ready_vs_sidecar_start": med["state_ready_s"] / med["sidecar_start_s"],
    }
    if "state_transfer_s" in med:
        ratios["transfer_vs_raw_tcp"] = med["state_transfer_s"] / med["raw_tcp_s"]
        ratios["transfer_vs_raw_tcp_fresh"] = med["state_transfer_s"] / med["raw_tcp_fresh_s"]
    if replay:
        ratios["replay_vs_raw_tcp"] = med["replay_s"] / med["raw_tcp_s"]
    state = results[0]["fill"]["history"]
    return {
        "machine": machine,
        "members": members,
        "state_bytes": state["bytes"],
        "state_messages": state["messages"],
        "size": size,
        "runs": runs,
        "load_msgs_per_s": load,
        "load_achieved": [r["state"].get("load_msgs_per_s", 0.0) for r in results],
        "state_ok": all(r["state"]["state_ok"] and r["empty"]["state_ok"] for r in results),
        "joiner_history": [r["state"]["history"] for r in results],
        "stats": stats,
        "ratios": ratios,
        "per_run": results,
    }


def report(r: dict[str, Any]) -> None:
    state = fmt_bytes(r["state_bytes"])
    print(
        f"join: {r['members']} members, {state} of state in {r['state_messages']} messages of {fmt_size(r['size'])}, "
        f"{r['runs']} run(s); {r['machine']}"
    )
    load = r["load_msgs_per_s"]
    if load:
        achieved = ", ".join(f"{x:,.0f}" for x in r["load_achieved"])
        print(f"under load: {load:,.0f} msgs/s of 100 B asked in total, achieved {achieved}")
    if not r["state_ok"]:
        print("WARNING: a joiner's history did not match the leader's (see --json: joiner_history)")
    s = r["stats"]

    def cells(key: str, scale: float = 1.0, fmt: str = "{:.3f}") -> list[str]:
        if key not in s:
            return ["-", "-", "-"]
        v = s[key]
        return [fmt.format(v[k] * scale) for k in ("median", "min", "max")]

    rows: list[list[str]] = []
    for label, title in (("state", f"with {state}"), ("empty", "empty history")):
        rows += [
            [f"join, {title}: spawn -> admitted (leader's view)", *cells(f"{label}_admitted_s")],
            [f"join, {title}: spawn -> joiner ready", *cells(f"{label}_ready_s")],
            ["    spawn -> joiner's first log line (start-up)", *cells(f"{label}_process_up_s")],
            ["    JOIN -> WELCOME (redirect, view change)", *cells(f"{label}_admission_s")],
            ["    WELCOME -> linked to the leader (sidecar start)", *cells(f"{label}_start_after_welcome_s")],
            ["    linked -> state received (transfer)", *cells(f"{label}_transfer_s")],
        ]
        if load:
            rows += [
                ["    msgs/s at member 0, 1 s before the spawn", *cells(f"{label}_load_rate_before", fmt="{:,.0f}")],
                ["    msgs/s at member 0, spawn -> ready", *cells(f"{label}_load_rate_during", fmt="{:,.0f}")],
                ["    msgs/s at member 0, 1 s after ready", *cells(f"{label}_load_rate_after", fmt="{:,.0f}")],
                ["    longest gap in member 0's deliveries", *cells(f"{label}_load_longest_gap_s")],
            ]
    rows += [
        [f"replay on the joiner: read {state}", *cells("replay_s")],
        [f"fill: {state} from member 0's app into 3 histories", *cells("fill_s")],
        ["what the state adds (ready - empty ready)", *cells("state_extra_s")],
        ["sidecar of a 1-member group: spawn -> ready", *cells("sidecar_start_s")],
        ["python -c pass", *cells("python_start_s")],
        ["python -c 'import <sidecar modules>'", *cells("sidecar_imports_s")],
        [f"raw TCP on loopback: {state}, one connection", *cells("raw_tcp_s")],
        ["    the same, into a new buffer per write, all kept", *cells("raw_tcp_fresh_s")],
    ]
    print_table(["seconds", "median", "min", "max"], rows)
    q = r["ratios"]
    parts = [
        f"ready / empty-history ready {q['ready_vs_empty_ready']:.2f}x",
        f"ready / 1-member start {q['ready_vs_sidecar_start']:.2f}x",
    ]
    if "transfer_vs_raw_tcp" in q:
        rate = r["state_bytes"] / s["state_transfer_s"]["median"] / 1e6
        raw_rate = r["state_bytes"] / s["raw_tcp_s"]["median"] / 1e6
        parts.append(f"transfer / raw TCP {q['transfer_vs_raw_tcp']:.1f}x ({rate:,.0f} vs {raw_rate:,.0f} MB/s)")
        parts.append(f"transfer / raw TCP into new buffers {q['transfer_vs_raw_tcp_fresh']:.1f}x")
    if "replay_vs_raw_tcp" in q:
        parts.append(f"replay / raw TCP {q['replay_vs_raw_tcp']:.1f}x")
    print("ratios of medians: " + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-mb", type=float, default=100.0, help="MiB of delivered history to fill (100)")
    parser.add_argument("--size", type=parse_size, default=MiB, help="message size of the fill (1MiB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--no-replay", action="store_true", help="skip reading the history back on the joiner")
    parser.add_argument("--load", type=float, default=0.0, help="msgs/s of 100 B sent in total during the joins")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    state_bytes = int(args.state_mb * MiB)
    r = measure(state_bytes, args.size, runs=args.runs, members=args.members, replay=not args.no_replay, load=args.load)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
    else:
        report(r)
    return 0 if r["state_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
