"""Joins on real processes: a member joins while everyone sends, receives the history, and
then delivers the same sequence as everyone; a killed member restarts and rejoins; joiners
asking together are admitted; bad JOIN requests are answered, and nothing else is disturbed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w
from support import DEADLINE, Groups, wait_for_condition

from derecho.client import Client
from derecho.localgroup import LocalGroup, LocalMember, free_ports
from derecho.wire import frames
from derecho.wire.types import PROTOCOL_VERSION, T

# A busy 2-core machine must not eject members that are merely slow.
SETTINGS = {"membership": {"suspicion_timeout": 2.0, "heartbeat_interval": 0.1}}


def spawn_joiner(group: LocalGroup, node_id: int, contact: LocalMember, port: int = 0) -> LocalMember:
    """A new member process that joins `group` through `contact` (membership.join)."""
    port = port or free_ports(1)[0]
    member = LocalMember(node_id, group.directory / f"member-{node_id}", port)
    member.directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "node_id": node_id,
        "group": group.group,
        "data_dir": str(member.directory),
        "members": [{"id": node_id, "address": f"127.0.0.1:{port}"}],
        "membership": {**SETTINGS["membership"], "join": [f"127.0.0.1:{contact.peer_port}"]},
    }
    member.config_path.write_text(tomli_w.dumps(config))
    group.spawn(member)
    group.members.append(member)
    return member


async def status(member: LocalMember) -> dict[str, Any]:
    async with await Client.connect(member.socket, timeout=DEADLINE) as client:
        return await client.status()


async def wait_for_members(members: list[LocalMember], expected: set[int]) -> int:
    """Every one of `members` is ready in one view listing exactly `expected`; returns its vid."""
    views: dict[int, tuple[int, frozenset[int]]] = {}

    async def agreed() -> bool:
        for m in members:
            try:
                doc = await status(m)
            except Exception:
                return False
            if not doc["ready"]:
                return False
            views[m.node_id] = (doc["view"]["vid"], frozenset(doc["view"]["members"]))
        return len(set(views.values())) == 1 and next(iter(views.values()))[1] == expected

    await wait_for_condition(agreed, f"members {[m.node_id for m in members]} in one view of {sorted(expected)}")
    return next(iter(views.values()))[0]


async def collect(stream: Any, into: list[tuple[int, int, bytes]], until: bytes) -> None:
    async for d in stream:
        into.append((d.version, d.sender, d.payload))
        if d.payload == until:
            return


async def stream_sends(client: Client, tag: str, stop: asyncio.Event, sent: list[int]) -> None:
    """Send numbered messages with a bounded pipeline until `stop`; every one must get a receipt."""
    n = 0
    while not stop.is_set():
        futures = [client.submit(f"{tag}-{n + i}".encode()) for i in range(50)]
        n += 50
        await asyncio.gather(*futures)
        sent.append(n)
        await client.writable()


async def test_a_member_joins_under_load_gets_the_history_then_the_same_sequence(groups: Groups):
    group = await groups.start(3, settings=SETTINGS)
    apps = [await groups.connect(m) for m in group.members]
    # Member 0's app sees everything since the group formed: the reference sequence.
    reference: list[tuple[int, int, bytes]] = []
    end = b"the end"
    reading = asyncio.create_task(collect(apps[0].deliveries(replay=True), reference, end))
    await apps[0].view()
    stop = asyncio.Event()
    counts: list[list[int]] = [[], [], []]
    senders = [asyncio.create_task(stream_sends(app, f"m{i}", stop, counts[i])) for i, app in enumerate(apps)]

    async def everyone_sent() -> bool:
        return all(counts)

    await wait_for_condition(everyone_sent, "every member to have sends delivered")
    # Join through member 1, not the leader: it is redirected to member 0.
    joiner = spawn_joiner(group, 3, group.members[1])
    try:
        vid = await wait_for_members(group.members, {0, 1, 2, 3})
        joined = await groups.connect(joiner)
        seen: list[tuple[int, int, bytes]] = []
        replaying = asyncio.create_task(collect(joined.deliveries(replay=True), seen, end))
        await joined.view()
        before = [len(c) for c in counts]

        async def everyone_sent_again() -> bool:
            return all(len(c) > b for c, b in zip(counts, before, strict=True))

        await wait_for_condition(everyone_sent_again, "sends after the join")
        mine = [await joined.send(f"joiner-{i}".encode()) for i in range(20)]
    finally:
        stop.set()
        await asyncio.gather(*senders)
    await apps[2].send(end)
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(reading, replaying)
    assert vid >= 1
    # The joiner's app replayed the history it received and then delivered live: together
    # exactly the sequence member 0 delivered since the group formed.
    assert len(seen) == len(reference) > 0
    assert seen == reference
    versions = {v for v, _, _ in reference}
    assert all(r.version in versions for r in mine)
    doc = await status(joiner)
    assert doc["history"]["0/0"]["complete"] is True
    assert doc["view_history"][0]["reason"].startswith("joined through")


async def test_a_killed_member_restarts_and_rejoins_with_the_history(groups: Groups):
    group = await groups.start(3, settings=SETTINGS)
    victim = group.members[2]
    apps = [await groups.connect(m) for m in group.members[:2]]
    for i in range(30):
        await apps[i % 2].send(f"before-{i}".encode())
    os.kill(victim.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
    victim.process.wait()  # type: ignore[union-attr]
    await wait_for_members(group.members[:2], {0, 1})
    for i in range(10):
        await apps[0].send(f"meanwhile-{i}".encode())
    # The same command again: its data_dir holds the view it was in, so it rejoins.
    assert (victim.directory / "membership" / "view.json").exists()
    group.spawn(victim)
    vid = await wait_for_members(group.members, {0, 1, 2})
    assert vid == 2  # removed in view 1, back in view 2
    membership = group.members[0].directory / "membership"

    async def only_the_last_trim_kept() -> bool:
        return sorted(p.name for p in membership.glob("ragged_trim*")) == ["ragged_trim-v1-sg0-sh0.json"]

    await wait_for_condition(only_the_last_trim_kept, "the trims of earlier views pruned")
    back = await groups.connect(victim)
    seen: list[tuple[int, int, bytes]] = []
    replay = asyncio.create_task(collect(back.deliveries(replay=True), seen, b"after"))
    await back.view()
    await apps[1].send(b"after")
    async with asyncio.timeout(DEADLINE):
        await replay
    payloads = [p for _, _, p in seen]
    assert payloads[:30] == [f"before-{i}".encode() for i in range(30)]
    assert payloads[30:] == [f"meanwhile-{i}".encode() for i in range(10)] + [b"after"]


async def test_joiners_asking_together_are_all_admitted(groups: Groups):
    group = await groups.start(3, settings=SETTINGS)
    joiners = [spawn_joiner(group, node, group.members[node % 3]) for node in (3, 4, 5)]
    vid = await wait_for_members(group.members, {0, 1, 2, 3, 4, 5})
    # At most one view change each; fewer when they were batched.
    assert 1 <= vid <= 3
    app = await groups.connect(joiners[-1])
    receipt = await app.send(b"hello from a joiner")
    assert receipt.version >> 32 == vid


async def test_a_joiner_with_no_group_to_join_exits_with_a_clear_error(tmp_path: Path):
    (port,) = free_ports(1)
    (nobody,) = free_ports(1)
    config = {
        "node_id": 7,
        "data_dir": str(tmp_path / "m7"),
        "members": [{"id": 7, "address": f"127.0.0.1:{port}"}],
        "membership": {"join": [f"127.0.0.1:{nobody}"], "join_timeout": 1.0},
    }
    path = tmp_path / "joiner.toml"
    path.write_text(tomli_w.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "derecho", "sidecar", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 7
    assert "was not admitted within membership.join_timeout (1 s)" in done.stderr
    assert f"127.0.0.1:{nobody}" in done.stderr


async def test_bad_join_requests_get_answers_and_the_group_goes_on(groups: Groups, raw_tcp):
    group = await groups.start(3, settings=SETTINGS)
    leader, other = group.members[0], group.members[1]

    async def ask(member: LocalMember, header: dict[str, Any]) -> dict[str, Any]:
        conn = await raw_tcp(member.peer_port)
        await conn.write(frames.encode(header))
        frame = await conn.read_frame()
        return frame.header

    join = {"t": T.JOIN, "node": 9, "group": group.group, "proto": PROTOCOL_VERSION, "a": "127.0.0.1:1"}
    assert (await ask(other, join))["leader"] == f"127.0.0.1:{leader.peer_port}"
    in_use = await ask(leader, {**join, "node": 1})
    assert in_use["ok"] is False and in_use["m"] == "node 1 is a member of view 0 already"
    garbled = await ask(leader, {**join, "node": "nine"})
    assert "JOIN needs 'node' (an integer node id)" in garbled["m"]
    wrong = await ask(leader, {**join, "group": "another"})
    assert wrong["t"] == T.ERROR and "does not match this member's group" in wrong["m"]
    app = await groups.connect(other)
    receipt = await app.send(b"still serving")
    assert receipt.version >> 32 == 0


class Tally:
    """A replicated state machine in an application: per sender, the sum of its numbers."""

    def __init__(self) -> None:
        self.sums: dict[str, int] = {}
        self.applied = 0
        self.restored_at: int | None = None

    def apply(self, sender: int, payload: bytes) -> None:
        if payload.isdigit():
            self.sums[str(sender)] = self.sums.get(str(sender), 0) + int(payload)
            self.applied += 1

    def snapshot(self) -> bytes:
        return json.dumps({"sums": self.sums, "applied": self.applied}).encode()

    def restore(self, snapshot: bytes, version: int) -> None:
        doc = json.loads(snapshot)
        self.sums, self.applied, self.restored_at = doc["sums"], doc["applied"], version


async def run_tally(stream: Any, tally: Tally, until: bytes, versions: list[int]) -> None:
    async for d in stream:
        tally.apply(d.sender, d.payload)
        versions.append(d.version)
        if d.payload == until:
            return


async def test_a_joiner_gets_the_applications_snapshot_and_then_only_what_follows(groups: Groups):
    group = await groups.start(3, settings=SETTINGS)
    apps = [await groups.connect(m) for m in group.members]
    provider, mirror = Tally(), Tally()
    end = b"end"
    provided: list[int] = []
    providing = asyncio.create_task(run_tally(apps[0].deliveries(snapshot=provider.snapshot), provider, end, provided))
    await apps[0].view()
    for i in range(1, 101):
        await apps[i % 3].send(str(i).encode())
    joiner = spawn_joiner(group, 3, group.members[2])
    await wait_for_members(group.members, {0, 1, 2, 3})
    doc = await status(joiner)
    snapshot_version = doc["history"]["0/0"]["snapshot_version"]
    assert snapshot_version is not None and doc["history"]["0/0"]["messages"] == 0
    joined = await groups.connect(joiner)
    replayed: list[int] = []
    mirroring = asyncio.create_task(
        run_tally(joined.deliveries(replay=True, restore=mirror.restore), mirror, end, replayed)
    )
    await joined.view()
    for i in range(101, 151):
        await apps[i % 3].send(str(i).encode())
    await joined.send(b"1000")
    await apps[1].send(end)
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(providing, mirroring)
    # The snapshot was taken after message 100 was applied and before anything of the next view.
    assert mirror.restored_at == snapshot_version == max(v for v in provided if v >> 32 == 0)
    assert all(v > snapshot_version for v in replayed)
    assert mirror.sums == provider.sums and mirror.applied == provider.applied == 151


async def test_a_failing_snapshot_hook_means_the_joiner_gets_the_history(groups: Groups):
    group = await groups.start(3, settings=SETTINGS)
    app = await groups.connect(group.members[0])

    def broken() -> bytes:
        raise RuntimeError("state not serializable")

    providing = asyncio.create_task(run_tally(app.deliveries(snapshot=broken), Tally(), b"end", []))
    await app.view()
    for i in range(1, 21):
        await app.send(str(i).encode())
    joiner = spawn_joiner(group, 3, group.members[0])
    await wait_for_members(group.members, {0, 1, 2, 3})
    doc = await status(joiner)
    assert doc["history"]["0/0"]["messages"] == 20 and doc["history"]["0/0"]["snapshot_version"] is None
    # Without restore= a replay that starts with a snapshot would fail; here it is plain history.
    joined = await groups.connect(joiner)
    tally = Tally()
    reading = asyncio.create_task(run_tally(joined.deliveries(replay=True), tally, b"end", []))
    await joined.view()
    await app.send(b"end")
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(providing, reading)
    assert tally.applied == 20 and tally.sums == {"0": sum(range(1, 21))}


async def test_a_joiner_whose_welcome_was_lost_is_welcomed_by_any_member(groups: Groups, raw_tcp):
    """The connection that asked to join closes before the WELCOME (as when the leader holding
    it fails mid-change); the group admits the node anyway. When the real process asks again,
    through any member, that member welcomes it into the view it was admitted in."""
    group = await groups.start(3, settings=SETTINGS)
    app = await groups.connect(group.members[0])
    for i in range(10):
        await app.send(f"before-{i}".encode())
    (port,) = free_ports(1)
    conn = await raw_tcp(group.members[0].peer_port)
    join = {"t": T.JOIN, "node": 3, "group": group.group, "proto": PROTOCOL_VERSION, "a": f"127.0.0.1:{port}"}
    await conn.write(frames.encode(join))
    assert (await conn.read_frame()).header["ok"] is True
    # Gone before the view change ends: no WELCOME reaches anyone.

    async def admitted() -> bool:
        return 3 in (await status(group.members[1]))["view"]["members"]

    await wait_for_condition(admitted, "node 3 admitted in view 1")
    conn.writer.close()
    joiner = spawn_joiner(group, 3, group.members[2], port=port)
    vid = await wait_for_members(group.members, {0, 1, 2, 3})
    assert vid == 1  # welcomed into the view it was admitted in: no removal, no second join
    back = await groups.connect(joiner)
    seen: list[tuple[int, int, bytes]] = []
    reading = asyncio.create_task(collect(back.deliveries(replay=True), seen, b"after"))
    await back.view()
    await app.send(b"after")
    async with asyncio.timeout(DEADLINE):
        await reading
    assert [p for _, _, p in seen] == [f"before-{i}".encode() for i in range(10)] + [b"after"]
