"""Total order end to end: real sidecar processes, several apps sending at once, every member reading.

Each test starts a local group, connects apps (Client over each member's Unix socket), has
some of them send concurrently while every member's app reads its deliveries, and checks
what the apps saw: one identical sequence everywhere, versions built from (view id, seq),
receipts that match the deliveries, FIFO per sending app, nothing lost or delivered twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from itertools import pairwise

import pytest
from support import DEADLINE, Everyone, Groups

from derecho.client import Client, DeliveryStream, Receipt, View
from derecho.localgroup import LocalGroup

END = b"end-of-test"


@dataclass
class App:
    """One application: its client, the member it runs on, and (if it sends) its receipts."""

    number: int
    member: int
    client: Client
    stream: DeliveryStream
    receipts: dict[bytes, Receipt] = field(default_factory=dict)
    # (version, seq, sender, payload) of what it delivered, up to the END marker.
    log: list[tuple[int, int, int, bytes]] = field(default_factory=list)


def payload(app: int, k: int) -> bytes:
    """Distinct payloads of varied sizes, a few of 700 KiB so batches cross the 1 MiB frame cut."""
    tag = f"app{app}:{k}:".encode()
    if k % 97 == 50:
        return tag + b"L" * (700 << 10)
    return tag + b"." * ((k * 7919 + app * 31) % 3000)


async def open_apps(groups: Groups, group: LocalGroup, placement: list[int]) -> list[App]:
    apps = []
    for number, member in enumerate(placement):
        client = await groups.connect(group.members[member])
        stream = client.deliveries()
        # The sidecar answers in order on a connection, so once this reply is here the
        # SUBSCRIBE before it took effect: nothing sent from now on can be missed.
        view = await client.view()
        assert view == View(0, list(range(len(group.members))))
        apps.append(App(number, member, client, stream))
    return apps


async def read_until_end(stream: DeliveryStream) -> list[tuple[int, int, int, bytes]]:
    """(version, seq, sender, payload) of every delivery up to and including the END marker."""
    log: list[tuple[int, int, int, bytes]] = []
    while not log or log[-1][3] != END:
        batch = await stream.next_batch()
        assert len(batch), "the delivery stream ended"
        log.extend(zip(batch.versions, batch.seqs, batch.senders, batch.payloads, strict=True))
    return log


async def send_all(app: App, count: int) -> None:
    """Send `count` messages at once: even apps await send() under gather, odd ones use submit()."""
    payloads = [payload(app.number, k) for k in range(count)]
    if app.number % 2 == 0:
        receipts = await asyncio.gather(*(app.client.send(p) for p in payloads))
    else:
        futures = [app.client.submit(p) for p in payloads]
        await app.client.writable()
        receipts = await asyncio.gather(*futures)
    app.receipts = dict(zip(payloads, receipts, strict=True))


def check_logs(apps: list[App], senders: list[App], count: int) -> None:
    expected = {payload(a.number, k) for a in senders for k in range(count)} | {END}
    reference = None
    for app in apps:
        log = app.log
        payloads = [p for _, _, _, p in log]
        assert len(payloads) == len(set(payloads)), f"app {app.number} on member {app.member} got a duplicate"
        assert set(payloads) == expected, f"app {app.number} on member {app.member} missed or invented messages"
        seqs = [q for _, q, _, _ in log]
        assert all(a < b for a, b in pairwise(seqs)), "seq not strictly increasing"
        for version, seq, _, _ in log:
            assert version == (0 << 32) | seq
        # FIFO per sending app, and the sender is the member that app runs on.
        position = {p: i for i, p in enumerate(payloads)}
        for sender in senders:
            order = [position[payload(sender.number, k)] for k in range(count)]
            assert order == sorted(order), f"app {sender.number}'s messages were reordered at app {app.number}"
        by_payload = {p: (v, q, s) for v, q, s, p in log}
        for sender in senders:
            for data, receipt in sender.receipts.items():
                version, seq, who = by_payload[data]
                assert (receipt.version, receipt.seq) == (version, seq)
                assert who == sender.member
        ordered = [(v, s, p) for v, _, s, p in log]
        if reference is None:
            reference = ordered
        assert ordered == reference, f"app {app.number} on member {app.member} delivered in a different order"


@pytest.mark.parametrize(
    ("members", "placement", "sending"),
    [
        # Two apps on member 0 and one on member 2 send; member 1's app only reads.
        (3, [0, 1, 2, 0, 2], [0, 3, 4]),
        # Members 1 and 3 have apps that never send.
        (5, [0, 1, 2, 3, 4, 0, 4], [0, 2, 5, 6]),
        (1, [0, 0], [0, 1]),
    ],
    ids=["3-members", "5-members", "1-member"],
)
async def test_concurrent_apps_see_one_order(groups: Groups, members: int, placement: list[int], sending: list[int]):
    group = await groups.start(members)
    apps = await open_apps(groups, group, placement)
    senders = [apps[i] for i in sending]
    count = 150
    readers = [asyncio.create_task(read_until_end(app.stream)) for app in apps]
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*(send_all(app, count) for app in senders))
        # Sent after every receipt came back: the last message of the test at every member.
        end = await senders[-1].client.send(END)
        logs = await asyncio.gather(*readers)
    for app, log in zip(apps, logs, strict=True):
        app.log = log
    assert all(len(a.receipts) == count for a in senders)
    check_logs(apps, senders, count)
    assert apps[0].log[-1][:2] == (end.version, end.seq)


async def test_view_names_every_member_at_every_member(groups: Groups, shared_group: LocalGroup):
    group = shared_group
    for member in group.members:
        client = await groups.connect(member)
        assert await client.view() == View(0, [0, 1, 2])


async def test_empty_and_single_messages_are_delivered_everywhere(groups: Groups, shared_group: LocalGroup):
    group = shared_group
    clients = [await groups.connect(m) for m in group.members]
    streams = [c.deliveries() for c in clients]
    for c in clients:
        await c.view()
    empty = await clients[1].send(b"")
    one = await clients[2].send(b"x")
    for stream in streams:
        async with asyncio.timeout(DEADLINE):
            first = await anext(stream)
            second = await anext(stream)
        assert (first.payload, first.sender, first.version, first.seq) == (b"", 1, empty.version, empty.seq)
        assert (second.payload, second.sender, second.version, second.seq) == (b"x", 2, one.version, one.seq)


async def test_a_stream_opened_later_starts_at_that_point(groups: Groups, shared_group: LocalGroup):
    group = shared_group
    everyone = await Everyone.join(groups, group)
    await everyone.deliver(sender=0)  # delivered at every member, member 2 included
    late = await groups.connect(group.members[2])
    stream = late.deliveries()
    await late.view()
    after = await everyone.clients[1].send(b"after")
    async with asyncio.timeout(DEADLINE):
        got = await anext(stream)
        for earlier in everyone.streams:  # "after" is delivered everywhere: nothing left in flight
            assert (await anext(earlier)).payload == b"after"
    assert (got.payload, got.sender, got.seq) == (b"after", 1, after.seq)


RAW = {"subgroups": [{"name": "raw", "shards": [{"members": [0, 1, 2], "mode": "raw"}]}]}


async def test_raw_mode_delivers_everything_fifo_per_sender_without_versions(groups: Groups):
    group = await groups.start(3, settings=RAW)
    apps = await open_apps(groups, group, [0, 1, 2, 0, 2])
    senders = [apps[0], apps[3], apps[4]]
    count = 150
    readers = [asyncio.create_task(read_until_end(app.stream)) for app in apps]
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*(send_all(app, count) for app in senders))
        await senders[0].client.send(END)
        logs = await asyncio.gather(*readers)
    expected = {payload(a.number, k) for a in senders for k in range(count)} | {END}
    for app, log in zip(apps, logs, strict=True):
        payloads = [p for _, _, _, p in log]
        assert len(payloads) == len(set(payloads)) == len(expected)
        assert set(payloads) == expected
        assert all(version == -1 for version, _, _, _ in log)
        position = {p: i for i, p in enumerate(payloads)}
        for sender in senders:
            order = [position[payload(sender.number, k)] for k in range(count)]
            assert order == sorted(order), f"app {sender.number}'s messages were reordered at app {app.number}"
        # seq is the sending member's own counter: consecutive per sender, the same everywhere.
        per_sender: dict[int, list[int]] = {}
        for _, seq, sender, _ in log:
            per_sender.setdefault(sender, []).append(seq)
        for sender, seqs in per_sender.items():
            assert seqs == list(range(len(seqs))), f"member {sender}'s raw seqs at app {app.number}"
        by_payload = {p: (q, s) for _, q, s, p in log}
        for sender in senders:
            for data, receipt in sender.receipts.items():
                assert receipt.version == -1
                assert by_payload[data] == (receipt.seq, sender.member)


# -- the checker itself: it must reject what it is there to catch ---------------------------------


def synthetic_apps(count: int = 6) -> tuple[list[App], list[App]]:
    """A correct history of four apps: apps 0 (on member 0) and 1 (on member 2) send in turn,
    apps 2 and 3 only read."""
    senders = [App(0, 0, None, None), App(1, 2, None, None)]  # type: ignore[arg-type]
    log = []
    for k in range(count):
        for sender in senders:
            seq = len(log)
            data = payload(sender.number, k)
            log.append((seq, seq, sender.member, data))
            sender.receipts[data] = Receipt(seq, seq)
    log.append((len(log), len(log), 0, END))
    readers = [App(2, 0, None, None), App(3, 1, None, None)]  # type: ignore[arg-type]
    apps = readers + senders
    for app in apps:
        app.log = list(log)
    return apps, senders


def swap_payloads(log: list, i: int, j: int) -> None:
    (vi, qi, si, pi), (vj, qj, sj, pj) = log[i], log[j]
    log[i], log[j] = (vi, qi, sj, pj), (vj, qj, si, pi)


def mutate(kind: str, apps: list[App], senders: list[App]) -> None:
    log = apps[1].log
    if kind == "duplicate":
        log.insert(3, log[2])
    elif kind == "lost":
        del log[4]
    elif kind == "seq-not-increasing":
        log[2], log[3] = log[3], log[2]
    elif kind == "version-not-from-seq":
        v, q, s, p = log[5]
        log[5] = (v + (1 << 32), q, s, p)
    elif kind == "other-order-at-one-member":
        swap_payloads(log, 2, 3)
    elif kind == "fifo-broken-everywhere":
        # App 0's messages 1 and 2 trade places at every member, receipts agreeing: only FIFO is wrong.
        for app in apps:
            swap_payloads(app.log, 2, 4)
        a, b = payload(0, 1), payload(0, 2)
        senders[0].receipts[a], senders[0].receipts[b] = senders[0].receipts[b], senders[0].receipts[a]
    elif kind == "receipt-mismatch":
        data = payload(1, 3)
        senders[1].receipts[data] = Receipt(0, 0)


def test_the_checker_accepts_a_correct_history():
    apps, senders = synthetic_apps()
    check_logs(apps, senders, 6)


@pytest.mark.parametrize(
    "kind",
    [
        "duplicate",
        "lost",
        "seq-not-increasing",
        "version-not-from-seq",
        "other-order-at-one-member",
        "fifo-broken-everywhere",
        "receipt-mismatch",
    ],
)
def test_the_checker_rejects_a_wrong_history(kind: str):
    apps, senders = synthetic_apps()
    mutate(kind, apps, senders)
    with pytest.raises(AssertionError):
        check_logs(apps, senders, 6)
