"""Failures in a real local group: a member killed, frozen, or a majority lost, while apps stream.

Every member's app sends a pipelined stream and reads every delivery. Then one member is
SIGKILLed (its connections break) or SIGSTOPped (it goes silent past the suspicion timeout),
and the survivors must install the next view without it and go on. What the apps saw is then
checked against virtual synchrony: survivors delivered one identical sequence without
duplicates; every send at a survivor got a receipt, naming where its message was delivered;
whatever any app was told was delivered (a receipt, or a delivery at the member that failed)
was delivered at every survivor; of a failed member's messages, what got through is a prefix
of what it sent, at all survivors alike; in the new view only its members' messages are
delivered, and sends made at a survivor once it has wedged complete there (earlier ones may
still be delivered in the old view by the ragged trim). A member that loses its majority or was
removed stops with exit code 3 or 4, and its app's sends end in errors, not hangs.

Membership is timed in these tests only through the suspicion timeout the sidecars are given;
waits poll for conditions under support.DEADLINE and no assertion is about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from support import DEADLINE, Groups, wait_for_condition

from derecho.client import Client, DerechoError, Receipt
from derecho.config import SidecarConfig
from derecho.localgroup import LocalGroup, LocalMember

END = b"end-of-test"
COUNT = 200  # messages each app sends
WINDOW = 20  # sends an app keeps outstanding
GATE = 100  # survivors send their messages from here on only once the failure happened
TRIGGER = 60  # the failure happens when the failing member's app has this many receipts
# A SIGKILL breaks the member's connections, so survivors suspect it at once: a long
# timeout keeps a busy machine from suspecting healthy members. A SIGSTOP is only noticed
# by silence, so that test waits out a short one.
KILL_TIMEOUT = 3.0
STOP_TIMEOUT = 0.5

Entry = tuple[int, int, int, bytes]  # (version, seq, sender, payload) of a delivery


def payload(member: int, k: int) -> bytes:
    tag = f"m{member}:{k}:".encode()
    return tag + b"." * ((k * 7919 + member * 31) % 1500)


class App:
    """The application on one member: a pipelined sender and a reader of every delivery."""

    def __init__(self, member: int, client: Client) -> None:
        self.member = member
        self.client = client
        self.stream = client.deliveries()
        self.order: list[bytes] = []  # payloads in the order they were submitted
        self.outcomes: dict[bytes, Any] = {}  # payload -> Receipt or the exception it ended in
        self.receipts = 0
        self.on_receipt: Callable[[int], None] | None = None
        self.log: list[Entry] = []
        self.stream_error: BaseException | None = None

    def submit(self, data: bytes) -> asyncio.Future[Receipt] | None:
        self.order.append(data)
        try:
            future = self.client.submit(data)
        except DerechoError as exc:
            self.outcomes[data] = exc
            return None
        future.add_done_callback(lambda f: self._ended(data, f))
        return future

    def _ended(self, data: bytes, future: asyncio.Future[Receipt]) -> None:
        if future.cancelled():
            self.outcomes[data] = asyncio.CancelledError()
            return
        error = future.exception()
        if error is not None:
            self.outcomes[data] = error
            return
        self.outcomes[data] = future.result()
        self.receipts += 1
        if self.on_receipt is not None:
            self.on_receipt(self.receipts)

    async def send_range(self, ks: range) -> None:
        """Submit payload(member, k) for k in `ks`, at most WINDOW outstanding; returns when all ended."""
        pending: set[asyncio.Future[Receipt]] = set()
        for k in ks:
            while len(pending) >= WINDOW:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            future = self.submit(payload(self.member, k))
            if future is not None:
                pending.add(future)
            if k % WINDOW == 0:
                with contextlib.suppress(DerechoError):
                    await self.client.writable()
        if pending:
            await asyncio.wait(pending)

    async def send_across(self, failed: asyncio.Event, watcher: Client) -> None:
        """Messages 0..GATE-1, then GATE..COUNT-1 once the failure happened and this member has
        wedged (or already installed the next view): those can only be delivered in the next view."""
        await self.send_range(range(GATE))
        await failed.wait()

        async def changing() -> bool:
            status = await watcher.status()
            return bool(status["wedged"]) or status["view"]["vid"] > 0

        await wait_for_condition(changing, f"member {self.member} to wedge or leave view 0")
        await self.send_range(range(GATE, COUNT))

    async def read(self) -> None:
        """Every delivery up to END, or up to the stream failing (its member went away)."""
        try:
            while not self.log or self.log[-1][3] != END:
                batch = await self.stream.next_batch()
                if not len(batch):
                    self.stream_error = EOFError("the delivery stream ended")
                    return
                self.log.extend(zip(batch.versions, batch.seqs, batch.senders, map(bytes, batch.payloads), strict=True))
        except DerechoError as exc:
            self.stream_error = exc


async def start_group(groups: Groups, members: int, suspicion_timeout: float) -> LocalGroup:
    """A running group whose members do view changes; skips the test if the runtime cannot yet."""
    if "membership" not in SidecarConfig.model_fields:
        pytest.skip("the sidecar config has no [membership] section (heartbeat_interval, suspicion_timeout)")
    group = await groups.start(members, settings={"membership": {"suspicion_timeout": suspicion_timeout}})
    async with await Client.connect(group.members[0].socket, timeout=DEADLINE) as client:
        status = await client.status()
    missing = [key for key in ("view_history", "halted") if key not in status]
    if missing:
        pytest.skip(f"the sidecar status has no {missing}: the runtime does not do view changes yet")
    return group


async def open_apps(groups: Groups, group: LocalGroup) -> list[App]:
    apps = []
    for member in group.members:
        client = await groups.connect(member)
        app = App(member.node_id, client)
        # Answered after the SUBSCRIBE: every delivery from here on reaches the stream.
        await client.view()
        apps.append(app)
    return apps


def pid(member: LocalMember) -> int:
    assert member.process is not None
    return member.process.pid


async def wait_for_view(groups: Groups, group: LocalGroup, vid: int, members: list[int], failed: list[int]) -> None:
    """Every member in `members` installs view `vid` = `members`, recording `failed` as removed."""
    for node in members:
        client = await groups.connect(group.members[node])

        async def installed(client: Client = client) -> bool:
            return (await client.status())["view"]["vid"] >= vid

        await wait_for_condition(installed, f"member {node} to install view {vid}")
        status = await client.status()
        assert status["halted"] is None, f"member {node} halted: {status['halted']}"
        assert (status["view"]["vid"], status["view"]["members"]) == (vid, members), f"at member {node}"
        entry = status["view_history"][-1]
        assert (entry["vid"], entry["members"], entry["failed"]) == (vid, members, failed), f"at member {node}"
        # Says who went, and who suspected them (a member that heard the news from others
        # names them; the first to notice names itself).
        for gone in failed:
            by = entry["suspected_by"][str(gone)]
            assert by and set(by) <= set(members), f"at member {node}: {entry}"
            assert f"failed: {gone} (suspected by {by})" in entry["reason"], entry
        vids = [e["vid"] for e in status["view_history"]]
        assert vids == list(range(vids[0], vid + 1)) and vids[0] <= vid - 1, f"history {vids} at member {node}"


async def wait_for_exit(member: LocalMember) -> int:
    assert member.process is not None
    process = member.process

    async def exited() -> bool:
        return process.poll() is not None

    await wait_for_condition(exited, f"member {member.node_id} to exit")
    assert process.returncode is not None
    return process.returncode


def check_histories(apps: list[App], survivors: list[int], gone: list[int], vid: int) -> dict[bytes, int]:
    """Virtual synchrony across view `vid` - 1 (where `gone` failed) and `vid`, from what the apps
    saw; returns the position of each payload in the survivors' common sequence."""
    first = apps[survivors[0]]
    for node in survivors:
        app = apps[node]
        assert app.stream_error is None, f"the delivery stream at survivor {node} failed: {app.stream_error!r}"
        assert app.log == first.log, f"survivors {survivors[0]} and {node} delivered different sequences"
    log = first.log
    payloads = [p for _, _, _, p in log]
    assert len(set(payloads)) == len(payloads), "a message was delivered twice"
    assert all(a < b for a, b in pairwise(v for v, _, _, _ in log)), "versions not strictly increasing"
    for version, seq, sender, data in log:
        assert version & 0xFFFFFFFF == seq
        assert version >> 32 in (vid - 1, vid), f"{data[:16]!r} delivered in view {version >> 32}"
        if version >> 32 == vid:
            assert sender in survivors, f"{data[:16]!r} from member {sender} delivered in view {vid} without it"
    position = {p: i for i, p in enumerate(payloads)}
    for app in apps:
        for data, outcome in app.outcomes.items():
            if isinstance(outcome, Receipt):
                assert data in position, f"member {app.member}'s app got a receipt for {data[:16]!r}, not delivered"
                version, seq, sender, _ = log[position[data]]
                assert (outcome.version, outcome.seq, sender) == (version, seq, app.member), (
                    f"the receipt for {data[:16]!r} at member {app.member} does not match its delivery"
                )
            else:
                assert isinstance(outcome, DerechoError), f"a send at member {app.member} ended in {outcome!r}"
        # What got through of an app's messages is a prefix of what it sent, delivered in order.
        through = [p for p in app.order if p in position]
        assert through == app.order[: len(through)], f"member {app.member}'s messages got through with a gap"
        places = [position[p] for p in through]
        assert places == sorted(places), f"member {app.member}'s messages were reordered"
    for node in survivors:
        app = apps[node]
        assert len(app.outcomes) == len(app.order) == COUNT
        errors = {p[:16]: o for p, o in app.outcomes.items() if not isinstance(o, Receipt)}
        assert not errors, f"sends at survivor {node} failed: {errors}"
    for node in gone:
        # A failed member delivered only what every survivor delivered, in the same order.
        delivered = apps[node].log
        assert delivered == log[: len(delivered)], f"member {node} delivered what the survivors did not"
    return position


def check_late_sends(apps: list[App], survivors: list[int]) -> None:
    """Sends a survivor's app made while its member was wedged (or later) complete in view 1."""
    for node in survivors:
        views = {r.version >> 32 for p, r in apps[node].outcomes.items() if int(p.split(b":")[1]) >= GATE}
        assert views == {1}, f"sends at {node} made during the view change completed in views {views}"


async def cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize(
    ("members", "victim"),
    [(3, 1), (5, 3), (3, 0)],
    ids=["3-members", "5-members", "3-members-leader"],
)
async def test_killed_member_is_removed_and_survivors_agree(groups: Groups, members: int, victim: int):
    group = await start_group(groups, members, KILL_TIMEOUT)
    groups.expect_exit(group, group.members[victim], {-signal.SIGKILL})
    apps = await open_apps(groups, group)
    survivors = [m for m in range(members) if m != victim]
    killed = asyncio.Event()

    def kill(receipts: int) -> None:
        if receipts == TRIGGER:
            os.kill(pid(group.members[victim]), signal.SIGKILL)
            killed.set()

    apps[victim].on_receipt = kill
    tasks = [asyncio.create_task(app.read()) for app in apps]
    tasks.append(asyncio.create_task(apps[victim].send_range(range(COUNT))))
    watchers = {m: await groups.connect(group.members[m]) for m in survivors}
    tasks += [asyncio.create_task(apps[m].send_across(killed, watchers[m])) for m in survivors]
    try:
        async with asyncio.timeout(DEADLINE):
            await killed.wait()
        await wait_for_view(groups, group, 1, survivors, [victim])
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*tasks[len(apps) :])
            end = await apps[survivors[0]].client.send(END)
            await asyncio.gather(*tasks[: len(apps)])
    finally:
        await cancel(tasks)
    assert end.version >> 32 == 1
    assert apps[victim].stream_error is not None, "the killed member's app still has a delivery stream"
    check_histories(apps, survivors, [victim], 1)
    check_late_sends(apps, survivors)
    await wait_for_view(groups, group, 1, survivors, [victim])  # and nothing changed since


async def test_stopped_member_is_removed_and_its_later_messages_never_delivered(groups: Groups):
    group = await start_group(groups, 3, STOP_TIMEOUT)
    victim, survivors = 1, [0, 2]
    member = group.members[victim]
    groups.expect_exit(group, member, {3, 4})
    apps = await open_apps(groups, group)
    app = apps[victim]
    stopped = asyncio.Event()
    after_stop: list[int] = []  # how many payloads the victim's app had submitted at the stop

    def stop(receipts: int) -> None:
        if receipts == TRIGGER:
            os.kill(pid(member), signal.SIGSTOP)
            after_stop.append(len(app.order))
            stopped.set()

    app.on_receipt = stop
    tasks = [asyncio.create_task(a.read()) for a in apps]
    tasks.append(asyncio.create_task(app.send_range(range(COUNT))))
    watchers = {m: await groups.connect(group.members[m]) for m in survivors}
    tasks += [asyncio.create_task(apps[m].send_across(stopped, watchers[m])) for m in survivors]
    try:
        async with asyncio.timeout(DEADLINE):
            await stopped.wait()
        for k in range(5):  # certainly after the stop, whatever the windowed sender did
            app.submit(f"late-{k}".encode())
        await wait_for_view(groups, group, 1, survivors, [victim])
        os.kill(pid(member), signal.SIGCONT)
        code = await wait_for_exit(member)
        assert code in (3, 4), f"the stopped member exited with {code}; log tail:\n{group.tail(member)}"
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*tasks[len(apps) :])
            end = await apps[survivors[0]].client.send(END)
            await asyncio.gather(*tasks[: len(apps)])
    finally:
        await cancel(tasks)
    assert end.version >> 32 == 1
    position = check_histories(apps, survivors, [victim], 1)
    late = app.order[after_stop[0] :]
    assert len(late) >= 5
    for data in late:
        assert data not in position, f"{data[:16]!r}, sent after the member was stopped, was delivered"
        assert isinstance(app.outcomes.get(data), DerechoError), f"{data[:16]!r} ended in {app.outcomes.get(data)!r}"
    assert len(app.outcomes) == len(app.order), "a send at the stopped member never ended"
    check_late_sends(apps, survivors)


async def test_member_that_loses_majority_halts_with_code_3(groups: Groups):
    group = await start_group(groups, 3, KILL_TIMEOUT)
    alone = group.members[0]
    groups.expect_exit(group, alone, {3})
    for node in (1, 2):
        groups.expect_exit(group, group.members[node], {-signal.SIGKILL})
    apps = await open_apps(groups, group)
    app = apps[0]
    killed: list[int] = []  # how many payloads the app had submitted at the kills

    def kill(receipts: int) -> None:
        if receipts == TRIGGER:
            for node in (1, 2):
                os.kill(pid(group.members[node]), signal.SIGKILL)
            killed.append(len(app.order))

    app.on_receipt = kill
    watcher = await groups.connect(alone)
    halted: list[str] = []  # every non-null "halted" its status reported before it went away

    async def watch() -> None:
        with contextlib.suppress(DerechoError):
            while True:
                reason = (await watcher.status())["halted"]
                if reason is not None:
                    halted.append(reason)
                await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(app.read()), asyncio.create_task(watch())]
    sender = asyncio.create_task(app.send_range(range(COUNT)))
    try:
        code = await wait_for_exit(alone)
        # Its app is not left hanging: every send and the delivery stream end.
        async with asyncio.timeout(DEADLINE):
            await sender
            await asyncio.gather(*tasks)
    finally:
        await cancel([sender, *tasks])
    log = alone.log_file.read_text(errors="replace")
    assert code == 3, f"exit code {code}; log tail:\n{group.tail(alone)}"
    assert killed, "the app never reached the receipt that triggers the kills"
    assert all(r.startswith("lost majority") for r in halted), halted
    assert halted or "lost majority" in log, f"neither status nor log says 'lost majority':\n{group.tail(alone)}"
    assert isinstance(app.stream_error, DerechoError)
    assert len(app.outcomes) == len(app.order) == COUNT
    for data, outcome in app.outcomes.items():
        assert isinstance(outcome, Receipt | DerechoError), f"{data[:16]!r} ended in {outcome!r}"
    for data in app.order[killed[0] :]:
        assert isinstance(app.outcomes[data], DerechoError), f"{data[:16]!r}, sent after the kills, was delivered"
    receipts = [o for o in app.outcomes.values() if isinstance(o, Receipt)]
    assert all(r.version >> 32 == 0 for r in receipts)


def derecho(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `derecho` command as a user would, with this interpreter."""
    return subprocess.run([sys.executable, "-m", "derecho", *args], capture_output=True, text=True, timeout=30)


async def test_derecho_leave_removes_a_member_without_waiting_for_a_timeout(groups: Groups):
    """`derecho leave` makes the member leave through a view change: it exits 0 and the others
    install the next view without it (a 60 s suspicion timeout shows no timeout was needed)."""
    group = await groups.start(3, settings={"membership": {"suspicion_timeout": 60.0}})
    leaver = group.members[2]
    done = derecho("leave", "--socket", str(leaver.socket))
    assert done.returncode == 0, done.stderr
    assert "member 2 is leaving the group" in done.stdout
    async with asyncio.timeout(20):
        while leaver.process.poll() is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
    assert leaver.process.returncode == 0  # type: ignore[union-attr]
    app = await groups.connect(group.members[0])
    async with asyncio.timeout(20):
        while (await app.status())["view"]["vid"] < 1:
            await asyncio.sleep(0.05)
    status = await app.status()
    assert status["view"]["members"] == [0, 1]
    entry = status["view_history"][-1]
    assert (entry["failed"], entry["left"], entry["reason"]) == ([2], [2], "left: [2]")
    receipt = await app.send(b"after the leave")
    assert receipt.version >> 32 == 1


async def test_derecho_signal_kill_and_the_saved_view(groups: Groups):
    """`derecho signal --member 2 kill` crashes a member of a local group; the survivors
    install view 1 and save it durably in data_dir/membership/view.json."""
    group = await groups.start(3)
    victim = group.members[2]
    groups.expect_exit(group, victim, {-9})
    done = derecho("signal", "--dir", str(group.directory), "--member", "2", "kill")
    assert done.returncode == 0, done.stderr
    assert f"sent SIGKILL to member 2 (pid {victim.process.pid})" in done.stdout  # type: ignore[union-attr]
    app = await groups.connect(group.members[0])
    async with asyncio.timeout(20):
        while (await app.status())["view"]["vid"] < 1:
            await asyncio.sleep(0.05)
    saved = group.members[0].directory / "membership" / "view.json"
    async with asyncio.timeout(20):
        while not saved.exists():
            await asyncio.sleep(0.05)
    record = json.loads(saved.read_text())
    assert record["vid"] == 1 and record["members"] == [0, 1] and record["failed"] == [2]
    assert record["subgroups"] == [[{"members": [0, 1], "senders": [0, 1], "mode": "ordered"}]]
    again = derecho("signal", "--dir", str(group.directory), "--member", "7", "stop")
    assert again.returncode == 1 and "is member 7 of the group" in again.stderr
