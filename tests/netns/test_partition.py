"""A network partition between real hosts: 3 of 5 members go on, 2 stop, and the 2 rejoin after healing.

Five members run in five network namespaces on one bridge (see conftest.py). Apps on two
majority members stream pipelined sends, an app on a minority member sends too, and every
member has a subscriber. Then two members are moved onto a bridge of their own: they reach
each other but not the other three. The majority rule says the three (3 of 5) install a view
of exactly themselves and go on delivering, and the two (2 of 5) stop serving writes and exit
with code 3, "lost majority". What the apps saw is then checked against virtual synchrony:
every send at the majority got exactly one outcome, a receipt, matching one delivery; the
three delivered one identical sequence without duplicates; the two delivered a prefix of it;
a minority send that got a receipt was delivered by the majority too.

The rejoin test then heals the partition and restarts the two exited members with the same
command, config and data_dir. By the join contract, a member whose data_dir holds a saved view
(membership/view.json) starts as a joiner: it contacts the members in its config, is admitted
in a next view, receives the group's delivered history, and reports ready. Then all five must
be in one view, and a message sent afterwards is delivered at all five in one order; a
subscriber on a rejoined member that asks for replay sees what a majority member's sees.

Waits poll for conditions under generous deadlines; no assertion is about speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from dataclasses import dataclass
from itertools import pairwise

import pytest

from derecho.client import Client, DerechoError, Receipt

from .conftest import DEADLINE, Network, wait_until

pytestmark = pytest.mark.root

MAJORITY = [0, 1, 2]
MINORITY = [3, 4]
EVERYONE = [*MAJORITY, *MINORITY]
SENDERS = [0, 2]  # majority members whose apps stream across the cut
MINORITY_SENDER = 3
END = b"end-of-stream"  # the last message of the partition test
# The last message once all five are back: not END, which a replayed history ends with.
END_REJOINED = b"end-after-rejoin"
WINDOW = 16  # sends an app keeps outstanding
PACE = 0.005  # seconds between an app's sends, so a stream spans the cut without flooding a small machine
BEFORE_CUT = 40  # receipts each majority app has when the link is cut
AFTER_CUT = 40  # receipts each majority app gets in the new view before the streams stop
EXIT_DEADLINE = 30.0  # for the minority to notice the cut, halt and exit
REJOIN_DEADLINE = 30.0  # for a restarted member to be admitted and ready
POST_REJOIN = 20  # messages each of two members sends once all five are back

Entry = tuple[int, int, bytes]  # (version, sender, payload) of a delivery


def tags(node: int, k: int) -> bytes:
    """The k-th message member `node`'s app sends once all five are back."""
    return f"rejoined-{node}:{k}".encode()


class Reader:
    """A subscriber on one member: every delivery, until `end` or until the stream fails."""

    def __init__(self, node: int, client: Client, *, end: bytes = END, replay: bool = False) -> None:
        self.node = node
        self.client = client
        self.end = end
        self.stream = client.deliveries(subgroup=0, shard=0, replay=True) if replay else client.deliveries()
        self.log: list[Entry] = []
        self.error: BaseException | None = None

    async def subscribed(self) -> None:
        # Answered after the SUBSCRIBE: from here on nothing delivered is missed.
        await self.client.view()

    async def run(self) -> None:
        try:
            while not self.log or self.log[-1][2] != self.end:
                batch = await self.stream.next_batch()
                if not len(batch):
                    self.error = EOFError("the delivery stream ended")
                    return
                self.log.extend(zip(batch.versions, batch.senders, map(bytes, batch.payloads), strict=True))
        except DerechoError as exc:
            self.error = exc


class Sender:
    """An app streaming pipelined sends from one member until told to stop or its member goes away."""

    def __init__(self, node: int, client: Client) -> None:
        self.node = node
        self.client = client
        self.order: list[bytes] = []  # payloads in the order they were submitted
        self.outcomes: dict[bytes, Receipt | BaseException] = {}
        self.ended = 0  # outcomes recorded, counting any that came twice (there must be none)

    def receipts(self, vid: int | None = None) -> int:
        """Receipts so far, or those for messages delivered in view `vid`."""
        return sum(isinstance(o, Receipt) and (vid is None or o.version >> 32 == vid) for o in self.outcomes.values())

    def _ended(self, data: bytes, future: asyncio.Future[Receipt]) -> None:
        self.ended += 1
        if future.cancelled():
            self.outcomes[data] = asyncio.CancelledError()
        else:
            self.outcomes[data] = future.exception() or future.result()

    async def run(self, stop: asyncio.Event) -> None:
        pending: set[asyncio.Future[Receipt]] = set()
        k = 0
        while not stop.is_set():
            while len(pending) >= WINDOW:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            data = f"m{self.node}:{k}".encode()
            k += 1
            self.order.append(data)
            try:
                future = self.client.submit(data)
            except DerechoError as exc:  # the member halted or went away: no more sends
                self.ended += 1
                self.outcomes[data] = exc
                break
            future.add_done_callback(lambda f, data=data: self._ended(data, f))
            pending.add(future)
            await asyncio.sleep(PACE)
        if pending:
            await asyncio.wait(pending)


@dataclass
class Partitioned:
    """What the partition test leaves for a test that goes on from there."""

    vid: int  # the view the majority installed without the minority
    log: list[Entry]  # what the majority delivered, from before the first send to END


async def watch_halted(client: Client, seen: list[str]) -> None:
    """Record every non-null `halted` the member's status reports, until it goes away."""
    with contextlib.suppress(DerechoError):
        while True:
            reason = (await client.status())["halted"]
            if reason is not None:
                seen.append(reason)
            await asyncio.sleep(0.05)


async def wait_for_view(net: Network, clients: dict[int, Client], members: list[int]) -> int:
    """Every node in `clients` installs one view whose members are exactly `members`; its vid."""

    async def agreed() -> bool:
        views = [(await c.status())["view"] for c in clients.values()]
        return all(sorted(v["members"]) == members for v in views) and len({v["vid"] for v in views}) == 1

    try:
        await wait_until(agreed, f"members {sorted(clients)} to install one view of {members}")
    except AssertionError as exc:
        seen = {n: (await c.status())["view"] for n, c in clients.items()}
        tails = "\n".join(f"member {n}:\n{net.hosts[n].tail(10)}" for n in clients)
        raise AssertionError(f"{exc}; views now {seen}\n{tails}") from None
    return (await next(iter(clients.values())).status())["view"]["vid"]


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def check_one_sequence(readers: dict[int, Reader], nodes: list[int]) -> list[Entry]:
    """`nodes` delivered one identical sequence, without duplicates; returns it."""
    first = readers[nodes[0]]
    for node in nodes:
        reader = readers[node]
        assert reader.error is None, f"the delivery stream at member {node} failed: {reader.error!r}"
        assert reader.log == first.log, f"members {nodes[0]} and {node} delivered different sequences"
    log = first.log
    payloads = [p for _, _, p in log]
    assert len(set(payloads)) == len(payloads), "a message was delivered twice"
    assert all(a < b for a, b in pairwise(v for v, _, _ in log)), "versions are not strictly increasing"
    return log


def check_sender(sender: Sender, log: list[Entry], *, all_delivered: bool) -> None:
    """Every send ended exactly once; a receipt names its message's delivery; what got through
    is a prefix of what the app sent, delivered in order (FIFO per sender)."""
    assert sender.ended == len(sender.outcomes) == len(sender.order), (
        f"member {sender.node}: {len(sender.order)} sends, {len(sender.outcomes)} with an outcome, "
        f"{sender.ended} outcomes recorded"
    )
    position = {p: i for i, (_, _, p) in enumerate(log)}
    for data, outcome in sender.outcomes.items():
        if isinstance(outcome, Receipt):
            assert data in position, f"member {sender.node}'s app got a receipt for {data!r}, never delivered"
            version, origin, _ = log[position[data]]
            assert (outcome.version, origin) == (version, sender.node), (
                f"the receipt for {data!r} names another delivery"
            )
        else:
            assert not all_delivered, f"a send at member {sender.node} ended in {outcome!r}"
            assert isinstance(outcome, DerechoError), f"a send at member {sender.node} ended in {outcome!r}"
    through = [p for p in sender.order if p in position]
    assert through == sender.order[: len(through)], f"member {sender.node}'s messages got through with a gap"
    places = [position[p] for p in through]
    assert places == sorted(places), f"member {sender.node}'s messages were reordered"


async def partition_minority(net: Network) -> Partitioned:
    """Stream sends, cut MINORITY off, and check the majority goes on and the minority exits 3."""
    clients = {n: await net.connect(net.hosts[n]) for n in EVERYONE}
    readers = {n: Reader(n, clients[n]) for n in EVERYONE}
    for reader in readers.values():
        await reader.subscribed()
    senders = {n: Sender(n, clients[n]) for n in [*SENDERS, MINORITY_SENDER]}
    watchers = {n: await net.connect(net.hosts[n]) for n in EVERYONE}
    halted: dict[int, list[str]] = {n: [] for n in MINORITY}
    stop = asyncio.Event()
    reading = [asyncio.create_task(r.run()) for r in readers.values()]
    sending = {n: asyncio.create_task(s.run(stop)) for n, s in senders.items()}
    watching = [asyncio.create_task(watch_halted(watchers[n], halted[n])) for n in MINORITY]
    try:
        for node in SENDERS:
            await wait_until(lambda s=senders[node]: s.receipts() >= BEFORE_CUT, f"member {node}'s first receipts")
        net.cut(MINORITY)

        # The three install a view of exactly themselves, having removed the two.
        vid = await wait_for_view(net, {n: watchers[n] for n in MAJORITY}, MAJORITY)
        assert vid >= 1
        for node in MAJORITY:
            report = await watchers[node].status()
            assert report["halted"] is None, f"majority member {node} halted: {report['halted']}"
            removed = {m for entry in report["view_history"] if entry["vid"] > 0 for m in entry["failed"]}
            assert removed == set(MINORITY), f"member {node}'s view history: {report['view_history']}"

        # The two notice they lost the majority, and exit with code 3.
        for node in MINORITY:
            host = net.hosts[node]
            code = await net.wait_exit(host, EXIT_DEADLINE)
            assert code == 3, f"member {node} exited with {code}, not 3 (lost majority); log tail:\n{host.tail()}"
            log_text = host.log_file.read_text(errors="replace")
            assert all(r.startswith("lost majority") for r in halted[node]), halted[node]
            assert halted[node] or "lost majority" in log_text, (
                f"neither member {node}'s status nor its log says 'lost majority':\n{host.tail()}"
            )

        # The majority goes on: the streams get receipts in the new view, and so does a send now.
        for node in SENDERS:
            await wait_until(
                lambda s=senders[node]: s.receipts(vid) >= AFTER_CUT, f"member {node}'s receipts in view {vid}"
            )
        after = await clients[1].send(b"after the cut")
        assert after.version >> 32 == vid, f"a send after the cut was delivered in view {after.version >> 32}"
        stop.set()
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(*sending.values())
            end = await clients[0].send(END)
            await asyncio.gather(*reading)
    finally:
        stop.set()
        await stop_tasks([*reading, *sending.values(), *watching])
    assert end.version >> 32 == vid

    log = check_one_sequence(readers, MAJORITY)
    for version, origin, data in log:
        if version >> 32 > 0:
            assert origin in MAJORITY, f"{data!r} from member {origin} delivered in view {version >> 32}"
    for node in SENDERS:
        check_sender(senders[node], log, all_delivered=True)
        assert senders[node].receipts(vid) >= AFTER_CUT
    # The minority's app was not left hanging: each send ended, in a receipt (delivered by the
    # majority too, in view 0) or an error.
    check_sender(senders[MINORITY_SENDER], log, all_delivered=False)
    for node in MINORITY:
        reader = readers[node]
        assert isinstance(reader.error, DerechoError), f"member {node}'s stream ended in {reader.error!r}"
        assert reader.log == log[: len(reader.log)], f"member {node} delivered what the majority did not"
        assert all(v >> 32 == 0 for v, _, _ in reader.log)
    sent = {n: (len(s.order), s.receipts()) for n, s in senders.items()}
    print(f"majority installed view {vid}; it delivered {len(log)} messages; (sends, receipts) per app {sent}")
    return Partitioned(vid, log)


async def test_cut_minority_exits_with_lost_majority_and_majority_goes_on(network: Network):
    await partition_minority(network)


def suffix_related(a: list[Entry], b: list[Entry]) -> bool:
    """One sequence is a suffix of the other (a retained history may be cut at its old end)."""
    shorter, longer = sorted((a, b), key=len)
    return longer[len(longer) - len(shorter) :] == shorter


async def test_healed_minority_rejoins_and_delivers_in_the_same_order(network: Network):
    net = network
    partitioned = await partition_minority(net)
    net.heal(MINORITY)
    for node in MINORITY:
        host = net.hosts[node]
        held = sorted(str(p.relative_to(host.data_dir)) for p in host.data_dir.rglob("*"))
        saved = host.saved_view.exists()
        assert saved, (
            f"member {node} saved no view at {host.saved_view}, so by the join contract it would not "
            f"restart as a joiner; its data_dir holds {held}"
        )
        print(f"member {node} restarts with saved view {json.loads(host.saved_view.read_text())}")
        net.spawn(host)  # the same command, config and data_dir as before
    await net.wait_ready([net.hosts[n] for n in MINORITY], REJOIN_DEADLINE)

    clients = {n: await net.connect(net.hosts[n]) for n in EVERYONE}
    vid = await wait_for_view(net, clients, EVERYONE)
    assert vid > partitioned.vid
    for node in EVERYONE:
        report = await clients[node].status()
        assert report["ready"] and report["halted"] is None, f"member {node} after the rejoin: {report}"

    if "replay" not in inspect.signature(Client.deliveries).parameters:
        pytest.fail("Client.deliveries() has no replay= keyword (the rejoin contract needs it)")
    # Subscribers with replay on a majority member and on the rejoined ones, plain ones elsewhere.
    replaying = [0, *MINORITY]
    readers = {n: Reader(n, clients[n], end=END_REJOINED, replay=n in replaying) for n in EVERYONE}
    for reader in readers.values():
        await reader.subscribed()
    reading = [asyncio.create_task(r.run()) for r in readers.values()]
    talkers = (0, MINORITY[0])  # a majority member and a rejoined one
    try:
        async with asyncio.timeout(DEADLINE):
            receipts = await asyncio.gather(*(clients[n].send(tags(n, k)) for n in talkers for k in range(POST_REJOIN)))
            end = await clients[0].send(END_REJOINED)
            await asyncio.gather(*reading)
    finally:
        await stop_tasks(reading)
    assert all(r.version >> 32 == vid for r in [*receipts, end]), "a send after the rejoin left the view of five"

    # What was sent after the rejoin: delivered at all five in one order, with the same versions.
    fresh = {tags(n, k) for n in talkers for k in range(POST_REJOIN)} | {END_REJOINED}
    after: dict[int, list[Entry]] = {}
    for node, reader in readers.items():
        assert reader.error is None, f"the delivery stream at member {node} failed: {reader.error!r}"
        after[node] = [e for e in reader.log if e[2] in fresh]
    for node in EVERYONE:
        assert after[node] == after[0], f"members 0 and {node} delivered the post-rejoin messages differently"
    assert {p for _, _, p in after[0]} == fresh
    payloads = [p for _, _, p in after[0]]
    assert len(payloads) == len(fresh), "a message was delivered twice after the rejoin"
    for node in talkers:
        mine = [p for p in payloads if p.startswith(f"rejoined-{node}:".encode())]
        assert mine == [tags(node, k) for k in range(POST_REJOIN)], f"member {node}'s messages out of FIFO order"
    receipt_of = dict(zip([tags(n, k) for n in talkers for k in range(POST_REJOIN)], receipts, strict=True))
    for version, origin, data in after[0]:
        if data in receipt_of:
            assert receipt_of[data].version == version, f"the receipt for {data!r} names another delivery"
            assert data.startswith(f"rejoined-{origin}:".encode())
    for node in EVERYONE:
        if node not in replaying:
            # Subscribed after the rejoin without replay: those messages and nothing else.
            assert readers[node].log == after[node], f"member {node} delivered other messages after the rejoin"

    # Replay: first the member's retained history, then the live deliveries. A rejoined member's
    # history came from the group, so it is the history the majority delivered during the
    # partition test (or its latest part, if retention is bounded), as it is at member 0.
    for node in replaying:
        log = readers[node].log
        history = log[: len(log) - len(after[node])]
        assert log[len(history) :] == after[node], f"member {node}'s replay mixed history into the live deliveries"
        assert history, f"member {node} replayed no history"
        assert suffix_related(history, partitioned.log), (
            f"member {node} replayed {len(history)} deliveries that are not the end of the "
            f"{len(partitioned.log)} the majority delivered (first replayed: {history[0]}, last: {history[-1]})"
        )
