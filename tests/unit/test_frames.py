"""Wire frames: [header_len u32][payload_len u32][msgpack header][raw payload], read incrementally."""

from __future__ import annotations

import msgpack
import pytest

from derecho.wire.frames import (
    LARGE_PAYLOAD,
    MAX_HEADER_SIZE,
    PREFIX,
    PREFIX_SIZE,
    Frame,
    FrameDecoder,
    FrameError,
    encode,
    encode_header,
    encode_parts,
)

LIMIT = 1000  # max_payload for the small-stream tests


def raw_frame(header_bytes: bytes, payload: bytes = b"", payload_len: int | None = None) -> bytes:
    """A frame with an arbitrary (possibly malformed) header."""
    size = len(payload) if payload_len is None else payload_len
    return PREFIX.pack(len(header_bytes), size) + header_bytes + payload


def summary(items):
    """Frames and errors in a comparable form that ignores the error wording."""
    out = []
    for item in items:
        if isinstance(item, Frame):
            out.append(("frame", item.header, bytes(item.payload)))
        else:
            assert isinstance(item, FrameError)
            out.append(("error", item.fatal, item.header))
    return out


def feed_in_pieces(decoder: FrameDecoder, data: bytes, cuts: list[int]):
    out = []
    start = 0
    for cut in [*cuts, len(data)]:
        out.extend(decoder.feed(data[start:cut]))
        start = cut
    return out


# -- encoding ----------------------------------------------------------------------------------


def test_prefix_gives_both_lengths():
    data = encode({"t": 21, "i": 3}, b"hello")
    header_len, payload_len = PREFIX.unpack_from(data)
    assert PREFIX_SIZE == 8
    assert payload_len == 5
    assert msgpack.unpackb(data[PREFIX_SIZE : PREFIX_SIZE + header_len]) == {"t": 21, "i": 3}
    assert data[PREFIX_SIZE + header_len :] == b"hello"


def test_encode_header_is_encode_without_the_payload():
    header = {"t": 1, "n": [3, 4]}
    assert encode_header(header, 7) + b"abcdefg" == encode(header, b"abcdefg")
    assert encode(header, memoryview(b"xyz")) == encode(header, b"xyz")


def test_encode_parts_writes_one_frame_with_the_payloads_joined():
    header = {"t": 1, "n": [2, 0, 3]}
    parts = encode_parts(header, [b"ab", b"", memoryview(b"cde")])
    assert b"".join(bytes(p) for p in parts) == encode(header, b"abcde")
    (frame,) = FrameDecoder(LIMIT).feed(b"".join(bytes(p) for p in parts))
    assert frame == Frame(header, b"abcde")


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ({"t": 20, "node": 3, "group": "g", "proto": 1}, b""),
        ({"t": 21, "sg": 0, "sh": 1, "i": 5, "m": [1, 2], "n": [1, 2], "x": {1: {"traceparent": "00-ab"}}}, b"abc"),
        ({"t": 22, "d": [0, 1, 1, 2**40]}, b""),
        ({"t": 12, "r": 9, "b": {"bytes": b"\x00\xff", "none": None, "f": 1.5, "neg": -3}}, bytes(range(256))),
    ],
    ids=["hello", "data", "row", "reply"],
)
def test_round_trip(header, payload):
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(encode(header, payload)) == [Frame(header, payload)]
    assert decoder.buffered == 0
    assert not decoder.broken


def test_several_frames_in_one_feed_come_out_in_order():
    frames = [({"t": 21, "i": i}, b"p" * i) for i in range(20)]
    data = b"".join(encode(h, p) for h, p in frames)
    assert FrameDecoder(LIMIT).feed(data) == [Frame(h, p) for h, p in frames]


# -- splitting ---------------------------------------------------------------------------------

# A small stream with a bit of everything: normal frames, an empty payload, an oversized frame,
# a header that is not msgpack, a header without 't', and a payload exactly at the limit.
SMALL_STREAM = [
    encode({"t": 21, "i": 0}, b"first"),
    encode({"t": 22, "d": [0, 1]}),
    encode({"t": 21, "i": 1}, b"x" * (LIMIT + 1)),
    raw_frame(b"\xc1", b"junk"),
    raw_frame(msgpack.packb({"no_type": 1}), b""),
    encode({"t": 21, "i": 2}, b"y" * LIMIT),
    encode({"t": 13, "m": "last"}, b"z"),
]
SMALL_EXPECTED = [
    ("frame", {"t": 21, "i": 0}, b"first"),
    ("frame", {"t": 22, "d": [0, 1]}, b""),
    ("error", False, {"t": 21, "i": 1}),
    ("error", False, None),
    ("error", False, None),
    ("frame", {"t": 21, "i": 2}, b"y" * LIMIT),
    ("frame", {"t": 13, "m": "last"}, b"z"),
]


def test_small_stream_at_once():
    assert summary(FrameDecoder(LIMIT).feed(b"".join(SMALL_STREAM))) == SMALL_EXPECTED


def test_split_at_every_byte_boundary():
    data = b"".join(SMALL_STREAM)
    for cut in range(len(data) + 1):
        decoder = FrameDecoder(LIMIT)
        got = summary(feed_in_pieces(decoder, data, [cut]))
        assert got == SMALL_EXPECTED, f"split at byte {cut}"
        assert decoder.buffered == 0


def test_one_byte_at_a_time():
    data = b"".join(SMALL_STREAM)
    decoder = FrameDecoder(LIMIT)
    assert summary(feed_in_pieces(decoder, data, list(range(1, len(data))))) == SMALL_EXPECTED


def test_empty_feed_is_harmless():
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(b"") == []
    data = encode({"t": 1}, b"ab")
    assert decoder.feed(data[:3]) == []
    assert decoder.feed(b"") == []
    assert decoder.feed(data[3:]) == [Frame({"t": 1}, b"ab")]


# -- oversized payloads -----------------------------------------------------------------------


def test_oversized_payload_is_skipped_with_a_non_fatal_error_naming_the_limit():
    data = encode({"t": 1, "r": 4}, b"a" * 5000) + encode({"t": 1, "r": 5}, b"ok")
    out = FrameDecoder(LIMIT).feed(data)
    assert len(out) == 2
    error, frame = out
    assert isinstance(error, FrameError)
    assert not error.fatal
    assert error.header == {"t": 1, "r": 4}  # so the reader can answer the right request
    assert "5000" in error.reason and str(LIMIT) in error.reason and "max_message_size" in error.reason
    assert frame == Frame({"t": 1, "r": 5}, b"ok")


def test_payload_exactly_at_the_limit_is_accepted():
    assert FrameDecoder(10).feed(encode({"t": 1}, b"0123456789")) == [Frame({"t": 1}, b"0123456789")]


@pytest.mark.parametrize("piece", [1, 3, 100, 999, 4096])
def test_oversized_payload_skipped_across_many_feeds(piece):
    big = encode({"t": 1, "r": 1}, b"s" * 20_000)
    data = big + encode({"t": 1, "r": 2}, b"after") + encode({"t": 1, "r": 3}, b"")
    decoder = FrameDecoder(LIMIT)
    out = feed_in_pieces(decoder, data, list(range(piece, len(data), piece)))
    assert summary(out) == [
        ("error", False, {"t": 1, "r": 1}),
        ("frame", {"t": 1, "r": 2}, b"after"),
        ("frame", {"t": 1, "r": 3}, b""),
    ]
    assert decoder.buffered == 0


def test_skipping_never_buffers_the_refused_payload():
    decoder = FrameDecoder(LIMIT)
    header = encode_header({"t": 1}, 1_000_000)
    assert summary(decoder.feed(header)) == [("error", False, {"t": 1})]
    for _ in range(100):
        assert decoder.feed(b"\0" * 10_000) == []
        assert decoder.buffered == 0
    assert decoder.feed(encode({"t": 2}, b"next")) == [Frame({"t": 2}, b"next")]


# -- malformed headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header_bytes", "words"),
    [
        (b"\xc1", "not valid msgpack"),  # 0xc1 is never used in msgpack
        (b"\x92\x01", "not valid msgpack"),  # a 2-element array cut short
        (msgpack.packb({"t": 1}) + b"\x00", "not valid msgpack"),  # trailing bytes
        (msgpack.packb([1, 2]), "must be a msgpack map with a type field 't'"),
        (msgpack.packb({"x": 1}), "must be a msgpack map with a type field 't'"),
    ],
)
def test_malformed_header_is_non_fatal_and_the_stream_goes_on(header_bytes, words):
    data = raw_frame(header_bytes, b"payload") + encode({"t": 3}, b"fine")
    decoder = FrameDecoder(LIMIT)
    out = decoder.feed(data)
    assert len(out) == 2
    assert isinstance(out[0], FrameError) and not out[0].fatal
    assert words in out[0].reason
    assert out[1] == Frame({"t": 3}, b"fine")
    assert not decoder.broken


def test_malformed_header_with_a_large_payload_arriving_later_is_skipped():
    payload = b"q" * (LARGE_PAYLOAD + 10)
    data = raw_frame(b"\xc1", payload) + encode({"t": 3}, b"fine")
    decoder = FrameDecoder(1 << 20)
    out = feed_in_pieces(decoder, data, [PREFIX_SIZE + 1 + 100, PREFIX_SIZE + 1 + 40_000])
    assert summary(out) == [("error", False, None), ("frame", {"t": 3}, b"fine")]
    assert decoder.buffered == 0


@pytest.mark.parametrize("header_len", [0, MAX_HEADER_SIZE + 1, 0xFFFFFFFF])
def test_header_length_zero_or_huge_is_fatal(header_len):
    good = encode({"t": 1}, b"before")
    bad = PREFIX.pack(header_len, 0)
    decoder = FrameDecoder(LIMIT)
    out = decoder.feed(good + bad + encode({"t": 1}, b"after"))
    assert out[0] == Frame({"t": 1}, b"before")
    assert len(out) == 2
    assert isinstance(out[1], FrameError) and out[1].fatal
    assert str(header_len) in out[1].reason
    assert decoder.broken
    assert decoder.buffered == 0
    # Nothing after a fatal error can be trusted: the decoder stays silent.
    assert decoder.feed(encode({"t": 1}, b"later")) == []


def test_header_length_at_the_maximum_is_not_fatal():
    decoder = FrameDecoder(LIMIT)
    assert decoder.feed(PREFIX.pack(MAX_HEADER_SIZE, 0) + b"\x80") == []
    assert not decoder.broken


def test_fatal_prefix_split_across_feeds():
    decoder = FrameDecoder(LIMIT)
    bad = PREFIX.pack(0, 5)
    assert decoder.feed(bad[:5]) == []
    (error,) = decoder.feed(bad[5:])
    assert error.fatal and decoder.broken


# -- large payloads ----------------------------------------------------------------------------


def test_large_payload_is_gathered_across_many_feeds():
    payload = bytes(range(256)) * ((LARGE_PAYLOAD * 3) // 256 + 1)
    assert len(payload) > 3 * LARGE_PAYLOAD
    data = encode({"t": 21, "i": 0}, payload) + encode({"t": 22}, b"tail")
    decoder = FrameDecoder(1 << 20)
    header_end = len(data) - len(payload) - len(encode({"t": 22}, b"tail"))
    first = header_end + 1000
    assert decoder.feed(data[:first]) == []
    fed = first
    while fed < header_end + len(payload) - 5000:
        assert decoder.feed(data[fed : fed + 5000]) == []
        fed += 5000
        assert decoder.buffered == fed - header_end
    out = decoder.feed(data[fed:])
    assert out == [Frame({"t": 21, "i": 0}, payload), Frame({"t": 22}, b"tail")]
    assert decoder.buffered == 0


def test_large_payload_with_nothing_after_the_header_yet():
    payload = b"L" * (LARGE_PAYLOAD + 1)
    frame = encode({"t": 21}, payload)
    decoder = FrameDecoder(1 << 20)
    header_end = len(frame) - len(payload)
    assert decoder.feed(frame[:header_end]) == []
    assert decoder.feed(frame[header_end:]) == [Frame({"t": 21}, payload)]


@pytest.mark.parametrize("piece", [1000, 4096, LARGE_PAYLOAD - 1, LARGE_PAYLOAD, LARGE_PAYLOAD + 1])
def test_large_frames_in_a_stream_with_others_in_every_piece_size(piece):
    frames = [
        ({"t": 1, "i": 0}, b"a" * 10),
        ({"t": 1, "i": 1}, b"b" * (LARGE_PAYLOAD - 1)),
        ({"t": 1, "i": 2}, b"c" * LARGE_PAYLOAD),
        ({"t": 1, "i": 3}, b""),
        ({"t": 1, "i": 4}, b"d" * (2 * LARGE_PAYLOAD + 3)),
        ({"t": 1, "i": 5}, b"e"),
    ]
    data = b"".join(encode(h, p) for h, p in frames)
    decoder = FrameDecoder(1 << 20)
    out = feed_in_pieces(decoder, data, list(range(piece, len(data), piece)))
    assert out == [Frame(h, p) for h, p in frames]
    assert decoder.buffered == 0


def test_large_frame_split_at_every_boundary_near_its_edges():
    payload = b"".join(i.to_bytes(4, "big") for i in range(LARGE_PAYLOAD // 4 + 100))
    data = encode({"t": 1}, b"pre") + encode({"t": 2}, payload) + encode({"t": 3}, b"post")
    expected = [Frame({"t": 1}, b"pre"), Frame({"t": 2}, payload), Frame({"t": 3}, b"post")]
    second = len(encode({"t": 1}, b"pre"))
    body = second + len(encode_header({"t": 2}, len(payload)))
    end = body + len(payload)
    cuts = {*range(0, body + 20), *range(end - 20, min(end + 20, len(data) + 1))}
    for cut in sorted(cuts):
        decoder = FrameDecoder(1 << 20)
        assert feed_in_pieces(decoder, data, [cut]) == expected, f"split at byte {cut}"
    # And two cuts inside the payload, with the tail frame in the same feed as the payload's end.
    decoder = FrameDecoder(1 << 20)
    assert feed_in_pieces(decoder, data, [body + 5, end - 5]) == expected
