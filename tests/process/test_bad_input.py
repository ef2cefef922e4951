"""Bad input on both of a member's doors, and an application that stops reading.

Client socket: every bad request gets an ERROR frame and the same connection goes on being
served; only an unreadable stream (no trustworthy header length) closes it, and never
anybody else's. Peer port: anything but a proper HELLO from a member of the view is refused
with an ERROR frame and closed. After each, the group still delivers a new message at every
member. Every member must also exit 0 at the end (checked by the `groups` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import DEADLINE, Everyone, Groups, RawConnection, http_address

import derecho.client.client as client_module
from derecho.client import DeliveryStream, DerechoError, SlowConsumerError
from derecho.localgroup import LocalGroup, LocalMember
from derecho.wire import frames
from derecho.wire.types import PROTOCOL_VERSION, ErrorCode, T

RawUnix = Callable[[Path], Awaitable[RawConnection]]
RawTcp = Callable[[int], Awaitable[RawConnection]]

LIMIT = 1 << 20
SMALL_LIMIT = {"multicast": {"max_message_size": LIMIT}}


async def serves_status(conn: RawConnection, node_id: int) -> list[frames.Frame]:
    """A STATUS request on `conn` is answered; returns the frames that came before the answer."""
    await conn.send({"t": T.STATUS, "r": 4242})
    before = []
    while True:
        frame = await conn.read_frame()
        if frame.header.get("t") == T.REPLY and frame.header.get("r") == 4242:
            assert frame.header["b"]["node_id"] == node_id
            assert frame.header["b"]["ready"] is True
            return before
        before.append(frame)


def error_of(frame: frames.Frame) -> tuple[int, str]:
    assert frame.header.get("t") == T.ERROR, f"expected an ERROR frame, got {frame.header}"
    return frame.header["c"], frame.header["m"]


# -- the client socket --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"\xc1\xc1\xc1\xc1",  # 0xc1 is never valid msgpack
        msgpack.packb([1, 2, 3]),  # valid msgpack, not a map
        msgpack.packb({"r": 1}),  # a map without the type field
        msgpack.packb({"t": 4}) + b"\x00",  # trailing bytes inside the header
    ],
    ids=["not-msgpack", "not-a-map", "no-type", "extra-bytes"],
)
async def test_malformed_header_gets_error_and_the_same_connection_keeps_serving(
    groups: Groups, shared_group: LocalGroup, raw_unix: RawUnix, header: bytes
):
    group = shared_group
    everyone = await Everyone.join(groups, group)
    conn = await raw_unix(group.members[0].socket)
    payload = b"payload the sidecar must skip"
    await conn.write(frames.PREFIX.pack(len(header), len(payload)) + header + payload)
    code, message = error_of(await conn.read_frame())
    assert code == ErrorCode.BAD_FRAME
    assert "header" in message
    assert await serves_status(conn, 0) == []
    await everyone.deliver()


@pytest.mark.parametrize(
    "cut",
    ["in-prefix", "in-header", "in-small-payload", "in-large-payload"],
)
async def test_client_disconnecting_mid_frame_leaves_the_sidecar_serving(
    groups: Groups, shared_group: LocalGroup, raw_unix: RawUnix, cut: str
):
    group = shared_group
    member = group.members[1]
    everyone = await Everyone.join(groups, group)
    size = 200_000 if cut == "in-large-payload" else 100
    frame = frames.encode({"t": T.SEND, "r": [1], "n": [size], "sg": 0, "sh": 0}, b"z" * size)
    header_end = frames.PREFIX_SIZE + frames.PREFIX.unpack_from(frame)[0]
    keep = {
        "in-prefix": 5,
        "in-header": header_end - 3,
        "in-small-payload": header_end + size // 2,
        "in-large-payload": header_end + size // 2,
    }[cut]
    conn = await raw_unix(member.socket)
    await conn.write(frame[:keep])
    conn.writer.write_eof()  # gone mid-frame
    assert await conn.read_until_closed() == []  # the sidecar saw it, dropped the frame and closed
    await everyone.deliver(sender=1)  # serving everyone else; the half-sent message was not multicast


async def test_message_over_max_message_size_is_refused_and_the_app_goes_on(groups: Groups):
    group = await groups.start(3, settings=SMALL_LIMIT)
    readers = [await groups.connect(m) for m in group.members]
    streams = [r.deliveries() for r in readers]
    for r in readers:
        await r.view()
    app = await groups.connect(group.members[2])
    # One byte over is refused by the request check, twice the limit already by the frame reader.
    with pytest.raises(DerechoError) as refused:
        await app.send(b"x" * (LIMIT + 1))
    assert refused.value.code == ErrorCode.TOO_LARGE
    assert str(LIMIT) in str(refused.value)
    with pytest.raises(DerechoError) as refused:
        await app.send(b"x" * (2 * LIMIT))
    assert refused.value.code == ErrorCode.TOO_LARGE
    at_limit = await app.send(b"y" * LIMIT)
    after = await app.send(b"after")
    for stream in streams:
        async with asyncio.timeout(DEADLINE):
            first = await anext(stream)
            second = await anext(stream)
        assert (first.payload, first.seq) == (b"y" * LIMIT, at_limit.seq)
        assert (second.payload, second.seq) == (b"after", after.seq)


async def test_frame_far_over_max_message_size_names_the_configured_limit(groups: Groups):
    group = await groups.start(1, settings=SMALL_LIMIT)
    app = await groups.connect(group.members[0])
    with pytest.raises(DerechoError) as refused:
        await app.send(b"x" * (2 * LIMIT))
    assert str(LIMIT) in str(refused.value)


async def test_small_messages_sent_together_pass_a_small_max_message_size(groups: Groups):
    group = await groups.start(1, settings={"multicast": {"max_message_size": 65536}})
    app = await groups.connect(group.members[0])
    receipts = await asyncio.gather(*(app.send(bytes([k]) * 4000) for k in range(40)))
    assert len({r.seq for r in receipts}) == 40


@pytest.mark.parametrize("header_len", [0, frames.MAX_HEADER_SIZE + 1], ids=["zero", "over-4MiB"])
async def test_bad_header_length_closes_only_that_connection(
    groups: Groups, shared_group: LocalGroup, raw_unix: RawUnix, header_len: int
):
    group = shared_group
    member = group.members[0]
    everyone = await Everyone.join(groups, group)
    bystander = everyone.clients[0]
    conn = await raw_unix(member.socket)
    await conn.write(frames.PREFIX.pack(header_len, 0) + b"\x80" * 16)
    got = await conn.read_until_closed()
    assert len(got) == 1
    code, message = error_of(got[0])
    assert code == ErrorCode.BAD_FRAME
    assert str(header_len) in message
    assert (await bystander.status())["ready"] is True
    await everyone.deliver()


@pytest.mark.parametrize("kind", [99, "SEND", int(T.DELIVER), int(T.HELLO)])
async def test_unknown_frame_type_gets_bad_request(shared_group: LocalGroup, raw_unix: RawUnix, kind: object):
    group = shared_group
    conn = await raw_unix(group.members[0].socket)
    code, message = error_of(await conn.request({"t": kind, "r": 5}))
    assert code == ErrorCode.BAD_REQUEST
    assert repr(kind) in message
    assert await serves_status(conn, 0) == []


@pytest.mark.parametrize(
    ("fields", "payload"),
    [
        ({"r": [1, 2], "n": [3, 3]}, b"abcde"),  # sizes add up to more than the payload
        ({"r": [1, 2], "n": [1, 1]}, b"abcde"),  # ... and to less
        ({"r": [1, 2], "n": [5]}, b"abcde"),  # fewer sizes than request ids
        ({"r": 1, "n": [5]}, b"abcde"),  # request ids not a list
        ({"r": [1, 2], "n": [-1, 6]}, b"abcde"),  # a negative size
    ],
    ids=["too-much", "too-little", "fewer-sizes", "r-not-list", "negative"],
)
async def test_send_whose_sizes_do_not_add_up_gets_bad_request(
    groups: Groups, shared_group: LocalGroup, raw_unix: RawUnix, fields: dict, payload: bytes
):
    group = shared_group
    everyone = await Everyone.join(groups, group)
    conn = await raw_unix(group.members[0].socket)
    code, _ = error_of(await conn.request({"t": T.SEND, "sg": 0, "sh": 0, **fields}, payload))
    assert code == ErrorCode.BAD_REQUEST
    assert await serves_status(conn, 0) == []
    await everyone.deliver()  # and nothing of the bad SEND was multicast


@pytest.mark.parametrize(
    ("fields", "payload"),
    [
        ({"r": [], "n": []}, b""),
        ({"r": [1], "n": ["x"]}, b"abc"),
        ({"r": [1], "n": [None]}, b"abc"),
        ({"r": [1], "n": [3], "x": [1, 2]}, b"abc"),
        ({"r": [1], "n": [3], "x": "trace"}, b"abc"),
    ],
    ids=["empty-batch", "size-not-int", "size-none", "trace-list", "trace-string"],
)
async def test_garbled_send_fields_get_an_answer_and_the_connection_keeps_serving(
    shared_group: LocalGroup, raw_unix: RawUnix, fields: dict, payload: bytes
):
    group = shared_group
    conn = await raw_unix(group.members[0].socket)
    await conn.send({"t": T.SEND, "sg": 0, "sh": 0, **fields}, payload)
    before = await serves_status(conn, 0)
    for frame in before:  # an empty batch may be answered with nothing; anything else is refused
        assert error_of(frame)[0] == ErrorCode.BAD_REQUEST


async def test_subscribing_to_a_shard_that_does_not_exist_gets_unknown_shard(
    shared_group: LocalGroup, raw_unix: RawUnix
):
    group = shared_group
    conn = await raw_unix(group.members[1].socket)
    code, message = error_of(await conn.request({"t": T.SUBSCRIBE, "r": 3, "sg": 0, "sh": 7}))
    assert code == ErrorCode.UNKNOWN_SHARD
    assert "shard 7" in message
    code, _ = error_of(await conn.request({"t": T.SUBSCRIBE, "r": 4, "sg": "zero", "sh": 0}))
    assert code == ErrorCode.BAD_REQUEST
    assert await serves_status(conn, 1) == []


async def test_sending_to_a_shard_that_does_not_exist_gets_unknown_shard(groups: Groups, shared_group: LocalGroup):
    group = shared_group
    everyone = await Everyone.join(groups, group)
    with pytest.raises(DerechoError) as refused:
        await everyone.clients[0].send(b"lost", subgroup=3)
    assert refused.value.code == ErrorCode.UNKNOWN_SHARD
    await everyone.deliver(sender=0)


async def test_delivery_stream_of_a_shard_that_does_not_exist_raises(groups: Groups, shared_group: LocalGroup):
    group = shared_group
    app = await groups.connect(group.members[0])
    stream = app.deliveries(subgroup=0, shard=7)
    await app.view()  # the answer to the SUBSCRIBE came before this reply
    with pytest.raises(DerechoError) as refused:
        async with asyncio.timeout(2):  # the answer is already here; this only bounds the hang
            await anext(stream)
    assert refused.value.code == ErrorCode.UNKNOWN_SHARD


# -- the peer port ------------------------------------------------------------------------------


def hello(**fields: object) -> bytes:
    return frames.encode({"t": T.HELLO, "node": 7, "group": "local", "proto": PROTOCOL_VERSION, **fields})


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "header length"),
        (frames.PREFIX.pack(3, 0) + b"\xc1\xc1\xc1", "bad frame before HELLO"),
        (frames.encode({"t": T.ROW, "d": [0, 1]}), "first frame must be HELLO"),
        (hello(node=1, group="other-group"), "'other-group'"),
        (hello(node=1, proto=PROTOCOL_VERSION + 1), "protocol version"),
        (hello(node=99), "node 99"),
        (hello(node=0), "node 0"),  # the member itself
        (hello(node=1), "already connected"),  # an impostor of a connected member
    ],
    ids=["garbage", "bad-header", "not-hello", "wrong-group", "wrong-proto", "unknown-node", "itself", "impostor"],
)
async def test_peer_port_refuses_a_stranger_and_the_group_goes_on(
    groups: Groups, shared_group: LocalGroup, raw_tcp: RawTcp, data: bytes, named: str
):
    group = shared_group
    everyone = await Everyone.join(groups, group)
    conn = await raw_tcp(group.members[0].peer_port)
    await conn.write(data)
    got = await conn.read_until_closed()
    assert len(got) == 1, f"expected one ERROR frame before the close, got {[f.header for f in got]}"
    _, message = error_of(got[0])
    assert named in message
    for client in everyone.clients:
        status = await client.status()
        assert status["ready"] is True
        assert all(state == "connected" for state in status["peers"].values()), status["peers"]
    await everyone.deliver(sender=0)
    await everyone.deliver(sender=1)


# -- an application that stops reading ----------------------------------------------------------


async def read_n(stream: DeliveryStream, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        batch = await stream.next_batch()
        assert len(batch), "the delivery stream ended"
        got.extend(batch.payloads)
    return got


async def read_until_cut_off(stream: DeliveryStream) -> tuple[list[bytes], SlowConsumerError]:
    got: list[bytes] = []
    try:
        while True:
            batch = await stream.next_batch()
            assert len(batch), "the delivery stream ended without an error"
            got.extend(batch.payloads)
    except SlowConsumerError as exc:
        return got, exc


async def slow_consumers_disconnected(member: LocalMember) -> float:
    url = f"http://{await http_address(member)}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        if family.name == "derecho_slow_consumers_disconnected":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError("no derecho_slow_consumers_disconnected metric")


@pytest.mark.parametrize(
    ("client_settings", "multicast", "named"),
    [
        # Behind past hold_bytes: the group is slowed (the senders' window is small enough to
        # close) and the reader cut off after slow_reader_timeout.
        ({"hold_bytes": 1 << 20, "slow_reader_timeout": 1.0}, {"max_inflight_bytes": 2 << 20}, "slow_reader_timeout"),
        # Behind past max_buffered_bytes: cut off at once, long before slow_reader_timeout.
        ({"hold_bytes": 1 << 20, "max_buffered_bytes": 2 << 20, "slow_reader_timeout": 60.0}, {}, "max_buffered_bytes"),
    ],
    ids=["slow-reader-timeout", "max-buffered-bytes"],
)
async def test_app_that_stops_reading_is_cut_off_and_the_others_go_on(
    groups: Groups, monkeypatch: pytest.MonkeyPatch, client_settings: dict, multicast: dict, named: str
):
    # The client library reads ahead up to 64 MiB per stream before it stops reading the socket;
    # lower that here so an app that stops reading shows at the sidecar after a few messages.
    monkeypatch.setattr(client_module, "STREAM_BUFFER_BYTES", 256 << 10)
    group = await groups.start(3, settings={"client": client_settings, "multicast": multicast})
    stalled = await groups.connect(group.members[1])
    stalled_stream = stalled.deliveries()
    readers = [await groups.connect(m) for m in group.members]
    streams = [r.deliveries() for r in readers]
    for c in [stalled, *readers]:
        await c.view()
    sender = await groups.connect(group.members[0])
    count = 160  # 10 MiB in all: far past what hold_bytes and the sockets can absorb
    payloads = [k.to_bytes(4, "big") + b"m" * (64 << 10) for k in range(count)]
    reading = [asyncio.create_task(read_n(s, count)) for s in streams]
    async with asyncio.timeout(DEADLINE * 2):
        receipts = [await sender.send(p) for p in payloads]
        logs = await asyncio.gather(*reading)
    assert all(log == payloads for log in logs)
    assert [r.seq for r in receipts] == sorted(r.seq for r in receipts)
    # The stalled app now reads: what was sent to it before the cut-off, then the error.
    async with asyncio.timeout(DEADLINE):
        got, error = await read_until_cut_off(stalled_stream)
    assert error.code == ErrorCode.SLOW_CONSUMER
    assert named in str(error)
    assert len(got) < count
    assert got == payloads[: len(got)]
    assert [await slow_consumers_disconnected(m) for m in group.members] == [0, 1, 0]
    with pytest.raises(SlowConsumerError):
        await stalled.send(b"too late")
    await (await Everyone.join(groups, group)).deliver(sender=1)
