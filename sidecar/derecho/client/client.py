"""The async client: what an application uses to talk to its sidecar over the Unix socket.

    async with await Client.connect("/run/derecho/derecho.sock") as client:
        stream = client.deliveries()
        receipt = await client.send(b"hello")
        async for d in stream:
            print(d.version, d.sender, d.payload)

Sends made in the same event-loop turn leave in one frame, so many concurrent `send` calls
(for example under `asyncio.gather`) cost one system call, not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..tracing import Tracer, destination, end_error, end_ok, provider_is_set
from ..wire import frames
from ..wire.types import ErrorCode, T

BATCH_BYTES = 1 << 20
# What one delivery stream may hold unread before the client stops reading the socket; the
# sidecar then sees the application fall behind and slows the group to its pace (for at most
# client.slow_reader_timeout, after which it disconnects the application).
STREAM_BUFFER_MESSAGES = 100_000
STREAM_BUFFER_BYTES = 64 << 20


class DerechoError(Exception):
    """The sidecar refused a request; `code` is one of wire.types.ErrorCode."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class SlowConsumerError(DerechoError):
    """This application read deliveries too slowly and the sidecar cut it off."""


class ConnectionLostError(DerechoError):
    def __init__(self, message: str) -> None:
        super().__init__(0, message)


@dataclass(frozen=True, slots=True)
class Receipt:
    version: int
    seq: int


@dataclass(frozen=True, slots=True)
class View:
    vid: int
    members: list[int]


class Delivery:
    __slots__ = ("payload", "sender", "seq", "shard", "subgroup", "trace", "version")

    def __init__(
        self,
        version: int,
        seq: int,
        sender: int,
        payload: bytes,
        subgroup: int,
        shard: int,
        trace: dict[str, str] | None,
    ) -> None:
        self.version = version
        self.seq = seq
        self.sender = sender
        self.payload = payload
        self.subgroup = subgroup
        self.shard = shard
        self.trace = trace

    def __repr__(self) -> str:
        return f"Delivery(version={self.version}, seq={self.seq}, sender={self.sender}, {len(self.payload)} bytes)"


class DeliveryBatch:
    """Messages delivered together, as parallel lists (no object per message until asked).

    Iterating yields `Delivery` objects; high-rate consumers can read the lists directly.
    """

    __slots__ = ("payloads", "senders", "seqs", "shard", "subgroup", "traces", "versions")

    def __init__(
        self,
        subgroup: int,
        shard: int,
        versions: list[int],
        seqs: list[int],
        senders: list[int],
        payloads: list[bytes],
        traces: dict[int, dict[str, str]] | None,
    ) -> None:
        self.subgroup = subgroup
        self.shard = shard
        self.versions = versions
        self.seqs = seqs
        self.senders = senders
        self.payloads = payloads
        self.traces = traces

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, pos: int) -> Delivery:
        traces = self.traces
        return Delivery(
            self.versions[pos],
            self.seqs[pos],
            self.senders[pos],
            self.payloads[pos],
            self.subgroup,
            self.shard,
            traces.get(pos) if traces else None,
        )

    def __iter__(self) -> Iterator[Delivery]:
        for pos in range(len(self.payloads)):
            yield self[pos]


# An application's state hooks: snapshot() -> bytes, restore(snapshot, version); either may be async.
SnapshotHook = Callable[[], bytes | Awaitable[bytes]]
RestoreHook = Callable[[bytes, int], Awaitable[None] | None]


@dataclass(slots=True)
class _StateMarker:
    """A point in the delivery stream where the application's state is taken or restored:
    reached only once every delivery before it has been read (and so applied)."""

    kind: str  # "snapshot" (the sidecar asks for one) or "restore" (replay starts with one)
    request: Any
    version: int
    payload: bytes = b""


class DeliveryStream:
    """Deliveries of one shard, in delivery order, from the moment it was opened."""

    def __init__(
        self,
        client: Client,
        key: tuple[int, int],
        snapshot: SnapshotHook | None = None,
        restore: RestoreHook | None = None,
    ) -> None:
        self._client = client
        self.key = key
        self.snapshot = snapshot
        self.restore = restore
        self._batches: deque[DeliveryBatch | _StateMarker] = deque()
        self._pos = 0  # next unread message of the first batch
        self.unread = 0
        self.unread_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._ended = False

    def __aiter__(self) -> DeliveryStream:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            while not self._batches:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    raise StopAsyncIteration
                await self._wait()
            if not await self._at_marker():
                break
        batch = self._batches[0]
        assert isinstance(batch, DeliveryBatch)
        item = batch[self._pos]
        self._pos += 1
        self.unread -= 1
        self.unread_bytes -= len(item.payload)
        if self._pos == len(batch):
            self._batches.popleft()
            self._pos = 0
            if not self._batches:
                self._client._stream_drained()
        return item

    async def next_batch(self) -> DeliveryBatch:
        """The next delivered batch not yet read (never empty); an empty one at the end."""
        while True:
            while not self._batches:
                if self._error is not None:
                    raise self._error
                if self._ended:
                    return DeliveryBatch(self.key[0], self.key[1], [], [], [], [], None)
                await self._wait()
            if not await self._at_marker():
                break
        batch = self._batches.popleft()
        assert isinstance(batch, DeliveryBatch)
        if self._pos:
            pos = self._pos
            traces = {k - pos: v for k, v in batch.traces.items() if k >= pos} if batch.traces else None
            batch = DeliveryBatch(
                batch.subgroup,
                batch.shard,
                batch.versions[pos:],
                batch.seqs[pos:],
                batch.senders[pos:],
                batch.payloads[pos:],
                traces,
            )
            self._pos = 0
        self.unread -= len(batch)
        self.unread_bytes -= sum(map(len, batch.payloads))
        if not self._batches:
            self._client._stream_drained()
        return batch

    async def _at_marker(self) -> bool:
        """If the stream is at a state marker, carry it out (everything before it was read)."""
        head = self._batches[0]
        if not isinstance(head, _StateMarker):
            return False
        self._batches.popleft()
        if head.kind == "snapshot":
            await self._client._take_snapshot(self, head)
            return True
        if self.restore is None:
            raise DerechoError(
                ErrorCode.BAD_REQUEST,
                f"this member's history of subgroup {self.key[0]} shard {self.key[1]} starts with an application "
                f"snapshot (version {head.version}); pass restore= to deliveries() to load it",
            )
        done = self.restore(head.payload, head.version)
        if inspect.isawaitable(done):
            await done
        return True

    def _push_marker(self, marker: _StateMarker) -> None:
        self._batches.append(marker)
        self._wake()

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _push(self, batch: DeliveryBatch) -> None:
        self._batches.append(batch)
        self.unread += len(batch)
        self.unread_bytes += sum(map(len, batch.payloads))
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def close(self) -> None:
        self._client._streams.discard(self)
        self._end()


@dataclass(frozen=True, slots=True)
class ViewChange:
    """An installed view: its id, its members, who went (`failed`: all that went, of them `left`
    on purpose) and who came (`joined`) since the previous one, and the reason in words."""

    vid: int
    members: list[int]
    failed: list[int]
    reason: str
    joined: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


class ViewStream:
    def __init__(self) -> None:
        self._items: deque[ViewChange] = deque()
        self._seen = -1
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False

    def __aiter__(self) -> ViewStream:
        return self

    async def __anext__(self) -> ViewChange:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def _push(self, body: dict[str, Any]) -> None:
        vid = int(body.get("vid", -1))
        if vid <= self._seen:  # the reply and an event may both carry the same view
            return
        self._seen = vid
        self._items.append(
            ViewChange(
                vid,
                list(body.get("members", [])),
                list(body.get("failed", [])),
                str(body.get("reason", "")),
                list(body.get("joined", [])),
                list(body.get("left", [])),
            )
        )
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self) -> None:
        self._ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.decoder = frames.FrameDecoder(1 << 31, large_as_bytes=True)
        self.can_write = asyncio.Event()
        self.can_write.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        for item in self.decoder.buffer_updated(nbytes):
            if isinstance(item, frames.Frame):
                self.client._on_frame(item)
            else:  # the sidecar never sends bad frames; if it does, the stream is unusable
                self.client._connection_failed(f"unreadable frame from the sidecar: {item.reason}")
                return

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        self.client._connection_failed(f"connection to the sidecar lost ({exc or 'closed by the sidecar'})")


class Client:
    def __init__(self, path: str) -> None:
        self.path = path
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._next_request = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outgoing: dict[tuple[int, int], list[tuple[int, bytes, dict[str, str] | None]]] = {}
        self._flush_scheduled = False
        self._streams: set[DeliveryStream] = set()
        self._subscribed: set[tuple[int, int]] = set()
        self._reading_paused = False
        self._failure: DerechoError | None = None
        self._closing = False
        self.group = "derecho"
        # Tracing: on when the application installed a tracer provider before connecting.
        self._tracer: Tracer | None = None
        self._send_spans: dict[int, Any] = {}
        self._view_streams: list[ViewStream] = []
        # The stream per shard that replays (restore markers) or provides snapshots.
        self._state_streams: dict[tuple[int, int], DeliveryStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def connect(cls, path: str | Path, *, timeout: float = 10.0) -> Client:
        """Connect to a sidecar's socket, retrying until it exists or `timeout` passes."""
        client = cls(str(path))
        loop = asyncio.get_running_loop()
        client._loop = loop
        deadline = loop.time() + timeout
        delay = 0.01
        while True:
            try:
                transport, protocol = await loop.create_unix_connection(lambda: _Protocol(client), str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if loop.time() + delay > deadline:
                    raise ConnectionLostError(
                        f"no sidecar answers at {path} after {timeout:.1f} s ({exc.strerror}); "
                        "is it running (derecho up / derecho sidecar), and is this its socket path?"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        client._transport = transport  # type: ignore[assignment]
        client._protocol = protocol
        if provider_is_set():
            client._tracer = Tracer("derecho.client")
        client.group = (await client._request(T.VIEW)).get("group", client.group)
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        self._flush()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
            with contextlib.suppress(Exception):
                await asyncio.sleep(0)
        for stream in list(self._streams):
            stream._end()
        self._streams.clear()
        for view_stream in self._view_streams:
            view_stream._end()

    # -- requests -------------------------------------------------------------------------------

    async def send(
        self,
        payload: bytes,
        *,
        subgroup: int = 0,
        shard: int = 0,
        trace: dict[str, str] | None = None,
    ) -> Receipt:
        """Multicast `payload` in the shard; returns once it is delivered there, with its version."""
        protocol = self._protocol
        if protocol is not None and not protocol.can_write.is_set():
            await protocol.can_write.wait()
        return await self.submit(payload, subgroup=subgroup, shard=shard, trace=trace)

    def submit(
        self,
        payload: bytes,
        *,
        subgroup: int = 0,
        shard: int = 0,
        trace: dict[str, str] | None = None,
    ) -> asyncio.Future[Receipt]:
        """Like `send`, without waiting: the future resolves to the receipt.

        For pipelining many messages; the caller bounds how many are outstanding and should
        await `writable()` now and then so a busy sidecar can push back.
        """
        if self._failure is not None:
            raise self._failure
        request = self._next_request
        self._next_request += 1
        future: asyncio.Future[Any] = self._loop.create_future()  # type: ignore[union-attr]
        self._pending[request] = future
        if self._tracer is not None and trace is None:
            started = self._tracer.start_send(destination(self.group, (subgroup, shard)), len(payload), self.path)
            if started is not None:
                self._send_spans[request], trace = started
        key = (subgroup, shard)
        queue = self._outgoing.get(key)
        if queue is None:
            queue = self._outgoing[key] = []
        queue.append((request, payload, trace))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return future

    async def writable(self) -> None:
        """Wait until the socket to the sidecar accepts more data."""
        protocol = self._protocol
        if protocol is not None and not protocol.can_write.is_set():
            await protocol.can_write.wait()

    def deliveries(
        self,
        *,
        subgroup: int = 0,
        shard: int = 0,
        replay: bool = False,
        snapshot: SnapshotHook | None = None,
        restore: RestoreHook | None = None,
    ) -> DeliveryStream:
        """An async iterator over every message delivered in the shard from now on.

        With replay=True it first yields what the member kept of the shard's history (the
        state it received when it joined included, up to `state.history_bytes`), oldest first,
        then goes on live with nothing missed or repeated: how an application (re)builds its
        state. If that history starts with an application snapshot, `restore(snapshot,
        version)` is called with it first.

        With `snapshot`, this application provides its state to joiners: when a member joins
        the shard, `snapshot()` is called at the exact point in this stream where the view
        changes (every delivery before it read, none after), and its bytes are the joiner's
        state instead of the delivered history. Apply each delivery before reading the next,
        as `async for` does, so the state at that point is the state at that version.

        Replay and the hooks belong to this connection's first subscription to the shard.
        """
        if self._failure is not None:
            raise self._failure
        key = (subgroup, shard)
        if (replay or snapshot or restore) and key in self._subscribed:
            raise ValueError(
                f"this connection already subscribed to subgroup {subgroup} shard {shard}; ask for replay or "
                "state hooks on the first deliveries() call of a shard, or open another connection"
            )
        stream = DeliveryStream(self, key, snapshot, restore)
        self._streams.add(stream)
        if snapshot is not None or replay:
            self._state_streams[key] = stream
        if key not in self._subscribed:
            self._subscribed.add(key)
            request = self._new_request()
            # Sent in order with any later send, so nothing delivered after this call is missed.
            self._flush()
            subscribe = {"t": T.SUBSCRIBE, "r": request, "sg": subgroup, "sh": shard}
            if replay:
                subscribe["p"] = True
            if snapshot is not None:
                subscribe["snap"] = True
            self._write([frames.encode(subscribe)])
            self._pending[request].add_done_callback(lambda f: self._subscribed_or_failed(key, f))
        return stream

    def _subscribed_or_failed(self, key: tuple[int, int], future: asyncio.Future[Any]) -> None:
        error = future.exception() if not future.cancelled() else None
        if error is None:
            return
        # The sidecar refused the subscription (no such shard here): its streams fail with that.
        self._subscribed.discard(key)
        for stream in [s for s in self._streams if s.key == key]:
            stream._fail(error)
            self._streams.discard(stream)

    def views(self) -> ViewStream:
        """An async iterator of installed views: the current one first, then each new one."""
        if self._failure is not None:
            raise self._failure
        stream = ViewStream()
        self._view_streams.append(stream)
        request = self._new_request()
        self._flush()
        self._write([frames.encode({"t": T.WATCH_VIEWS, "r": request})])
        self._pending[request].add_done_callback(
            lambda f: stream._push(f.result()) if not f.cancelled() and f.exception() is None else None
        )
        return stream

    async def view(self) -> View:
        body = await self._request(T.VIEW)
        return View(body["vid"], list(body["members"]))

    async def ask_member_to_leave(self) -> None:
        """Make this client's member leave the group (through a view change) and exit."""
        await self._request(T.LEAVE)

    async def status(self) -> dict[str, Any]:
        return await self._request(T.STATUS)

    async def _request(self, kind: T, **fields: Any) -> Any:
        if self._failure is not None:
            raise self._failure
        request = self._new_request()
        self._flush()
        self._write([frames.encode({"t": kind, "r": request, **fields})])
        return await self._pending[request]

    def _new_request(self) -> int:
        request = self._next_request
        self._next_request += 1
        self._pending[request] = self._loop.create_future()  # type: ignore[union-attr]
        return request

    # -- output ---------------------------------------------------------------------------------

    def _write(self, chunks: list[bytes | memoryview]) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if len(chunks) == 1:
            self._transport.write(chunks[0])
        else:
            self._transport.writelines(chunks)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing:
            return
        outgoing = self._outgoing
        self._outgoing = {}
        small: list[bytes | memoryview] = []
        for (sg, sh), items in outgoing.items():
            start = 0
            while start < len(items):
                end = start
                size = 0
                while end < len(items) and (end == start or size + len(items[end][1]) <= BATCH_BYTES):
                    size += len(items[end][1])
                    end += 1
                batch = items[start:end]
                header: dict[str, Any] = {
                    "t": T.SEND,
                    "sg": sg,
                    "sh": sh,
                    "r": [r for r, _, _ in batch],
                    "n": [len(p) for _, p, _ in batch],
                }
                traces = {pos: t for pos, (_, _, t) in enumerate(batch) if t}
                if traces:
                    header["x"] = traces
                parts = frames.encode_parts(header, [p for _, p, _ in batch])
                if size >= BATCH_BYTES // 4:
                    if small:
                        self._write([b"".join(small)])
                        small = []
                    self._write(parts)
                else:
                    small.extend(parts)
                start = end
        if small:
            self._write([b"".join(small)])

    # -- input ----------------------------------------------------------------------------------

    def _on_frame(self, frame: frames.Frame) -> None:
        header = frame.header
        kind = header.get("t")
        if kind == T.DELIVER:
            self._on_deliver(header, frame.payload)
        elif kind == T.RECEIPTS:
            pending = self._pending
            spans = self._send_spans
            for request, version, seq in zip(header["r"], header["v"], header["q"], strict=True):
                future = pending.pop(request, None)
                if future is not None and not future.done():
                    future.set_result(Receipt(version, seq))
                if spans:
                    span = spans.pop(request, None)
                    if span is not None:
                        end_ok(span, **{"messaging.message.id": str(version), "derecho.seq": seq})
        elif kind == T.REPLY:
            future = self._pending.pop(header.get("r"), None)  # type: ignore[arg-type]
            if future is not None and not future.done():
                future.set_result(header.get("b"))
        elif kind == T.ERROR:
            self._on_error(header)
        elif kind == T.VIEW_EVENT:
            for stream in self._view_streams:
                stream._push(header.get("b") or {})
        elif kind in (T.SNAPSHOT_REQUEST, T.RESTORE):
            key = (header.get("sg"), header.get("sh"))
            stream = self._state_streams.get(key)  # type: ignore[arg-type]
            kind_name = "snapshot" if kind == T.SNAPSHOT_REQUEST else "restore"
            marker = _StateMarker(kind_name, header.get("r"), int(header.get("v", -1)), frame.payload)
            if stream is not None:
                stream._push_marker(marker)
            elif kind == T.SNAPSHOT_REQUEST:
                self._write([frames.encode({"t": T.SNAPSHOT, "r": marker.request, "e": "no stream takes snapshots"})])

    def _on_error(self, header: dict[str, Any]) -> None:
        code = int(header.get("c", 0))
        message = str(header.get("m", "unknown error"))
        request = header.get("r")
        error_type = SlowConsumerError if code == ErrorCode.SLOW_CONSUMER else DerechoError
        if code == ErrorCode.HALTED and self._failure is None:
            self._failure = DerechoError(code, message)
        if request is None:
            error = error_type(code, message)
            if code in (ErrorCode.SLOW_CONSUMER, ErrorCode.SHUTTING_DOWN):
                self._failure = error
                for stream in self._streams:
                    stream._fail(error)
            return
        for r in request if isinstance(request, list) else [request]:
            future = self._pending.pop(r, None)
            if future is not None and not future.done():
                future.set_exception(error_type(code, message))
            span = self._send_spans.pop(r, None) if self._send_spans else None
            if span is not None:
                end_error(span, ErrorCode(code).name if code in ErrorCode._value2member_map_ else str(code), message)

    def _on_deliver(self, header: dict[str, Any], payload: bytes) -> None:
        key = (header["sg"], header["sh"])
        streams = [s for s in self._streams if s.key == key]
        if not streams:
            return
        sizes = header["n"]
        if len(sizes) == 1:
            payloads = [payload]
        else:
            payloads = [payload[end - size : end] for end, size in zip(accumulate(sizes), sizes, strict=True)]
        traces = header.get("x")
        batch = DeliveryBatch(key[0], key[1], header["v"], header["q"], header["s"], payloads, traces)
        if traces and self._tracer is not None:
            self._tracer.record_deliver(destination(self.group, key), list(traces.values()), len(sizes), "app")
        for stream in streams:
            stream._push(batch)
            full = stream.unread > STREAM_BUFFER_MESSAGES or stream.unread_bytes > STREAM_BUFFER_BYTES
            if full and not self._reading_paused and self._transport:
                self._reading_paused = True
                self._transport.pause_reading()

    async def _take_snapshot(self, stream: DeliveryStream, marker: _StateMarker) -> None:
        """The application's state at the marker, sent to the sidecar for a joiner (or why not)."""
        reply: dict[str, Any] = {"t": T.SNAPSHOT, "r": marker.request, "sg": stream.key[0], "sh": stream.key[1]}
        try:
            assert stream.snapshot is not None
            state = stream.snapshot()
            if inspect.isawaitable(state):
                state = await state
            if not isinstance(state, bytes | bytearray | memoryview):
                raise TypeError(f"snapshot() returned {type(state).__name__}, not bytes")
        except Exception as exc:  # the joiner gets the delivered history instead
            reply["e"] = f"{type(exc).__name__}: {exc}"
            self._write([frames.encode(reply)])
            return
        self._write([frames.encode(reply, bytes(state))])

    def _stream_drained(self) -> None:
        if self._reading_paused and all(
            s.unread < STREAM_BUFFER_MESSAGES // 2 and s.unread_bytes < STREAM_BUFFER_BYTES // 2 for s in self._streams
        ):
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    def _connection_failed(self, reason: str) -> None:
        error = self._failure or ConnectionLostError(reason)
        self._failure = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        for view_stream in self._view_streams:
            view_stream._end()
        for stream in self._streams:
            if stream._error is None:
                if self._closing:
                    stream._end()
                else:
                    stream._fail(error)
        if self._transport is not None:
            self._transport.close()
