"""One member: drives the protocol core with sockets, and serves applications and HTTP.

The loop turn is the unit of batching. Every frame that arrives in a turn (from peers or
applications) is fed to the core as it is read; at the end of the turn the core's rules run
once (`GroupCore.flush`) and the resulting actions are carried out together: one write per
connection per turn, whatever the number of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from typing import Any

from ..config import SidecarConfig
from ..core.actions import Action, Deliver, Halt, Msg, Persist, SendData, SendRow, ShardKey, Stable, ViewInstalled
from ..core.group import GroupCore
from ..core.ordered import ProtocolError
from ..core.view import DeliveryMode, View, view_to_dict
from ..tracing import (
    Tracer,
    destination,
    end_ok,
    record_view_change,
    setup_sidecar_tracing,
    shutdown_tracing,
)
from ..wire import frames
from ..wire.types import ErrorCode, T
from .admission import Admission
from .batching import BATCH_BYTES, batch_frame, cut
from .clients import ClientServer, ClientSession, RequestError
from .connection import FramedConnection
from .durable import prune_trims, write_durably
from .history import ShardHistory
from .joining import Welcome
from .metrics import SidecarMetrics
from .peers import PeerMesh
from .state_transfer import StateTransfers

log = logging.getLogger(__name__)

# Process exit codes when the member halts, so a supervisor (Kubernetes) can tell why.
EXIT_CODES = {
    "left the group": 0,
    "lost majority": 3,
    "removed from the view": 4,
    "inadequate layout": 5,
    "cannot persist": 6,
    "join failed": 7,
}


class Sidecar:
    def __init__(self, config: SidecarConfig, welcome: Welcome | None = None) -> None:
        """A member of the view in `config`, or, with `welcome`, a joiner admitted to a running group."""
        self.config = config
        self.node_id = config.node_id
        self.joiner = welcome is not None
        self.view: View = welcome.view if welcome is not None else config.initial_view()
        mc = config.multicast
        self.core = GroupCore(
            my_node=self.node_id, view=self.view, window=mc.window, max_inflight_bytes=mc.max_inflight_bytes
        )
        self.max_frame_payload = max(mc.max_message_size, BATCH_BYTES) + 4096
        self.ready = False
        self.halted: str | None = None
        self.exit_code = 0
        # Installed views, newest last: {vid, members, failed, reason}.
        first_reason = f"joined through {welcome.via}" if welcome is not None else "initial view"
        self.view_history: list[dict[str, Any]] = [
            {
                "vid": self.view.vid,
                "members": list(self.view.members),
                "failed": [],
                "joined": [],
                "reason": first_reason,
            }
        ]
        # Delivered history per ordered shard: the state a joiner gets, what a replay reads.
        self.history: dict[ShardKey, ShardHistory] = {
            key: ShardHistory(config.state.history_bytes)
            for key, shard in self.core.shards.items()
            if self.view.shard(key).mode is DeliveryMode.ORDERED
        }
        self.transfers = StateTransfers(self, joiner=self.joiner)
        self.admission = Admission(self)
        self._view_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="view-writer")
        # Failure detector: when each peer was last heard from (loop time), and who I suspect.
        self.last_heard: dict[int, float] = {}
        self.reported: set[int] = set()
        self._last_beat = 0.0
        self.started_at = time.time()
        self.peer_state: dict[int, str] = {n: "connecting" for n in self.core.peers}
        # Per shard, my accepted SEND batches in msg_no order: (first msg_no, request ids,
        # session, submit time). My messages are delivered in msg_no order (FIFO per sender),
        # so receipts are answered from the front, a slice of request ids at a time.
        self.receipts: dict[ShardKey, deque[tuple[int, list[Any], ClientSession, float]]] = {
            key: deque() for key in self.core.shards
        }
        self.metrics = SidecarMetrics(self)
        self._dirty: set[FramedConnection] = set()
        self._turn_scheduled = False
        self._clients_paused = False
        self._stop = asyncio.Event()
        self.http_address: str | None = None
        addresses = {m.id: m.host_port for m in config.members}
        if welcome is not None:
            addresses.update(welcome.addresses)
        addresses[self.node_id] = config.me.host_port
        self.mesh = PeerMesh(
            my_node=self.node_id,
            group=config.group,
            addresses=addresses,
            max_payload=self.max_frame_payload,
            on_peer_frame=self.on_peer_frame,
            on_peer_up=self.on_peer_up,
            on_peer_down=self.on_peer_down,
            on_writes=self.connection_wrote,
            on_join=self.admission.on_join,
            on_join_lost=self.admission.on_join_lost,
        )
        self.mesh.members = set(self.view.members)
        # A client frame holds one message up to max_message_size, or a batch of smaller ones
        # up to the client library's batch size, whichever is larger.
        self.clients = ClientServer(self, config.socket_path, max(mc.max_message_size, BATCH_BYTES) + 4096)
        self.loop: asyncio.AbstractEventLoop | None = None
        # Tracing is off (None) unless OTEL_TRACES_EXPORTER names an exporter.
        self.tracer: Tracer | None = None
        self._publish_spans: dict[tuple[ShardKey, int], Any] = {}

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        if setup_sidecar_tracing(self.node_id, self.config.group):
            self.tracer = Tracer("derecho.sidecar")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        # HTTP first: once peers or apps can see this member, its status address is known.
        if self.config.http.address:
            from ..api.http import start_http

            self._http_runner, self.http_address = await start_http(self, self.config.http.address)
        # A joiner dials every member ranked before it (the old members, which do not know where
        # it listens until its HELLO says so, and the joiners admitted with it ahead of it), and
        # is dialled by those after it: one connection per pair, never two racing.
        earlier = list(self.view.members[: self.view.ranks[self.node_id]])
        await self.mesh.start(dial=earlier if self.joiner else None)
        await self.clients.start()
        (self.config.data_dir / "sidecar.pid").write_text(f"{os.getpid()}\n")
        assert self.loop is not None
        self._last_beat = self.loop.time()
        self.loop.call_later(self.config.membership.heartbeat_interval, self._heartbeat)
        if self.transfers.pending:
            self.loop.call_later(self.config.membership.join_timeout, self.transfers.overdue)
        if not self.core.peers:
            self._become_ready()
        log.info(
            "member %d of group %r: peers on %s, apps on %s, http on %s",
            self.node_id,
            self.config.group,
            self.config.me.address,
            self.config.socket_path,
            self.http_address,
        )

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        await self.start()
        await self._stop.wait()
        await self._leave()
        await self.close()
        return self.exit_code

    async def _leave(self) -> None:
        """On a requested stop, leave through the view change, so the others go on at once
        and do not count this member against their majority."""
        if self.halted or not self.ready or not self.core.peers:
            return
        self.core.leave()
        self._turn()
        await asyncio.sleep(0.05)  # the row update leaves with the next write; let it reach the peers

    def stop(self, reason: str = "asked to stop") -> None:
        log.info("stopping: %s", reason)
        self._stop.set()

    async def close(self) -> None:
        self._turn()
        # The last view saved is on disk before the process exits.
        await asyncio.get_running_loop().run_in_executor(None, self._view_writer.shutdown)
        await self.clients.close()
        await self.mesh.close()
        runner = getattr(self, "_http_runner", None)
        if runner is not None:
            await runner.cleanup()
        if self.tracer is not None:
            shutdown_tracing()
        with contextlib.suppress(FileNotFoundError):
            (self.config.data_dir / "sidecar.pid").unlink()

    # -- the loop turn ----------------------------------------------------------------------

    def connection_wrote(self, conn: FramedConnection) -> None:
        self._dirty.add(conn)
        self.schedule()

    def schedule(self) -> None:
        if not self._turn_scheduled and self.loop is not None:
            self._turn_scheduled = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        self._turn_scheduled = False
        if self.ready:
            self._execute(self.core.flush())
        self._apply_backpressure()
        dirty = self._dirty
        self._dirty = set()
        for conn in dirty:
            conn.flush_output()

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendData):
                self._send_data(action)
            elif isinstance(action, SendRow):
                self.mesh.send(action.to, [frames.encode({"t": T.ROW, "d": action.diff, "v": action.vid})])
            elif isinstance(action, Deliver):
                if not self.transfers.hold(action):  # a joiner delivers once its state is in
                    self.deliver(action)
            elif isinstance(action, Stable):
                self._receipts(action.shard, action.messages, -1)
            elif isinstance(action, Persist):
                self._persist(action)
            elif isinstance(action, ViewInstalled):
                self._installed(action)
            elif isinstance(action, Halt):
                self.halt(action)

    def _send_data(self, action: SendData) -> None:
        sg, sh = action.shard
        index = action.first_index
        nbytes = 0
        for batch, sizes in cut(action.messages):
            header: dict[str, Any] = {
                "t": T.DATA,
                "v": action.vid,
                "sg": sg,
                "sh": sh,
                "i": index,
                "m": [m.msg_no for m in batch],
                "n": sizes,
            }
            self.mesh.send(action.to, batch_frame(header, batch))
            index += len(batch)
            nbytes += sum(sizes)
        self.metrics.sent(action.shard, len(action.messages), nbytes)

    def deliver(self, action: Deliver) -> None:
        messages = action.messages
        key = action.shard
        subscribers = [s for s in self.clients.sessions if key in s.subscriptions]
        nbytes = 0
        vid = action.vid
        limit = self.config.client.max_buffered_bytes
        for batch, sizes in cut(messages):
            nbytes += sum(sizes)
            if not subscribers:
                continue
            seqs = [m.seq for m in batch]
            if action.ordered:
                base = vid << 32
                versions = [base | q for q in seqs]
            else:
                versions = [-1] * len(batch)
            header: dict[str, Any] = {
                "t": T.DELIVER,
                "sg": key[0],
                "sh": key[1],
                "v": versions,
                "q": seqs,
                "s": [m.sender for m in batch],
                "n": sizes,
            }
            parts = batch_frame(header, batch)
            for session in subscribers:
                if session.conn.closed:
                    continue
                session.conn.write(parts)
                # The hold bounds what a slow reader accumulates to about hold_bytes plus the
                # senders' windows; this cap is the last line if a configuration allows more.
                if session.conn.buffered_out > limit:
                    self._cut_off_slow_consumer(session, limit)
        self.metrics.delivered(key, len(messages), nbytes)
        if action.ordered:
            self.history[key].append(vid, messages)
        if self.tracer is not None:
            self._trace_delivery(key, messages)
        if action.ordered:
            me = self.node_id
            own = [m for m in messages if m.sender == me]
            if own:
                self._receipts(key, own, vid)

    def _trace_delivery(self, key: ShardKey, messages: list[Msg]) -> None:
        carriers = [m.trace for m in messages if m.trace]
        if not carriers:
            return
        assert self.tracer is not None
        dest = destination(self.config.group, key)
        self.tracer.record_deliver(dest, carriers, len(messages), f"member {self.node_id}")
        me = self.node_id
        for m in messages:
            if m.sender == me and m.trace:
                span = self._publish_spans.pop((key, m.msg_no), None)
                if span is not None:
                    end_ok(span, **{"derecho.seq": m.seq})

    def _cut_off_slow_consumer(self, session: ClientSession, limit: int) -> None:
        self._disconnect_slow_reader(
            session,
            f"this application fell more than {limit} bytes behind reading deliveries and was disconnected "
            "so the group is not held up; read deliveries faster, or raise client.max_buffered_bytes",
        )

    def _disconnect_slow_reader(self, session: ClientSession, message: str) -> None:
        log.warning("disconnecting client %d: %s", session.number, message)
        self.metrics.slow_consumers.inc()
        session.error(None, ErrorCode.SLOW_CONSUMER, message)
        session.subscriptions.clear()
        session.behind_since = None
        session.conn.close()
        self._update_holds()

    def _receipts(self, key: ShardKey, own: list[Msg], vid: int) -> None:
        batches = self.receipts[key]
        base = vid << 32 if vid >= 0 else -1
        i = 0
        while i < len(own) and batches:
            first, requests, session, submitted = batches[0]
            start = own[i].msg_no - first
            if start >= len(requests):  # cannot happen while delivery is FIFO per sender
                log.error("receipt bookkeeping out of step at msg_no %d; dropping a batch", own[i].msg_no)
                batches.popleft()
                continue
            take = min(len(own) - i, len(requests) - start)
            chunk = own[i : i + take]
            seqs = [m.seq for m in chunk]
            versions = [base | q for q in seqs] if base >= 0 else [-1] * take
            if i == 0:
                self.metrics.delivery_latency.observe(time.monotonic() - submitted)
            session.outstanding -= take
            session.conn.write(
                [frames.encode({"t": T.RECEIPTS, "r": requests[start : start + take], "v": versions, "q": seqs})]
            )
            i += take
            if start + take == len(requests):
                batches.popleft()

    def _apply_backpressure(self) -> None:
        pending = self.core.pending_bytes()
        limit = self.config.client.max_pending_bytes
        if not self._clients_paused and pending > limit:
            self._clients_paused = True
            for session in self.clients.sessions:
                session.conn.pause_reading()
        elif self._clients_paused and pending <= limit // 2:
            self._clients_paused = False
            for session in self.clients.sessions:
                session.conn.resume_reading()

    # -- peers --------------------------------------------------------------------------------

    def on_peer_up(self, node: int) -> None:
        self.peer_state[node] = "connected"
        self.last_heard[node] = self.loop.time() if self.loop else 0.0
        link = self.mesh.links[node]
        # A (re)connected peer needs my whole row, not just what changes from now on.
        row = self.core.sst.full_row()
        if row:
            link.write([frames.encode({"t": T.ROW, "d": row, "v": self.view.vid})])
        if not self.ready and not self.mesh.missing():
            self._become_ready()
        self.schedule()

    def _become_ready(self) -> None:
        self.ready = True
        log.info("all %d members connected; the group is ready", len(self.view.members))
        # Saved from the first view on: a member that restarts with it rejoins its group.
        self.save_view(self.view_history[-1])
        if self.loop is not None:
            # Silence is measured from now on: before, peers were still starting.
            now = self.loop.time()
            for node in self.core.peers:
                self.last_heard[node] = max(self.last_heard.get(node, now), now)
        self.schedule()

    def _heartbeat(self) -> None:
        """Beat to every connected peer (from start-up on, so nobody waiting for the rest of
        the group looks silent); once ready, suspect any peer silent for suspicion_timeout."""
        if self.halted or self._stop.is_set() or self.loop is None:
            return
        self.mesh.send(tuple(self.mesh.links), [frames.encode({"t": T.BEAT})])
        now = self.loop.time()
        interval = self.config.membership.heartbeat_interval
        stalled = now - self._last_beat - interval
        self._last_beat = now
        if stalled > interval:
            # This process did not run for a while (an overloaded machine): peers' frames may be
            # waiting unread in the socket; do not blame them for my own stall.
            for node in self.last_heard:
                self.last_heard[node] += stalled
        if self.ready:
            timeout = self.config.membership.suspicion_timeout
            for node in self.core.peers:
                if node not in self.reported and now - self.last_heard.get(node, now) > timeout:
                    self._suspect(node, f"silent for more than {timeout:g} s")
        self.schedule()
        self.loop.call_later(self.config.membership.heartbeat_interval, self._heartbeat)

    def _suspect(self, node: int, why: str) -> None:
        if node in self.reported or node not in self.view.ranks or self.halted:
            return
        self.reported.add(node)
        log.warning("suspecting member %d: %s; the view changes without it", node, why)
        self.metrics.suspicions.inc()
        self.core.suspect(node)
        self.schedule()

    def on_peer_down(self, node: int, reason: str) -> None:
        self.peer_state[node] = f"lost: {reason}"
        if self.ready and not self._stop.is_set():
            self._suspect(node, reason)

    def on_peer_frame(self, node: int, frame: frames.Frame) -> None:
        header = frame.header
        kind = header.get("t")
        if self.loop is not None:
            self.last_heard[node] = self.loop.time()
        try:
            if kind == T.DATA:
                self._peer_data(node, header, frame.payload)
            elif kind == T.ROW:
                diff = header.get("d")
                vid = header.get("v")
                if not isinstance(diff, list) or not all(isinstance(v, int) for v in diff) or type(vid) is not int:
                    raise ProtocolError("ROW frame needs an integer list 'd' and a view id 'v'")
                self.core.receive_row(node, diff, vid)
            elif kind == T.BEAT:
                return
            elif kind == T.STATE:
                self.transfers.receive(header, frame.payload)
            elif kind == T.STATE_SNAPSHOT:
                self.transfers.receive_snapshot(header, frame.payload)
            elif kind == T.STATE_END:
                self.transfers.receive_end(header)
            elif kind == T.ERROR:
                log.error("peer %d reports an error: %s", node, header.get("m"))
                return
            else:
                raise ProtocolError(f"unknown peer frame type {kind!r}")
        except ProtocolError as exc:
            self.metrics.peer_protocol_errors.inc()
            self.mesh.drop(node, f"protocol error from node {node}: {exc}")
            return
        self.schedule()

    # -- view changes -----------------------------------------------------------------------

    def _persist(self, action: Persist) -> None:
        record = action.record
        name = f"{action.what}-v{action.vid}-sg{record.get('subgroup', 0)}-sh{record.get('shard', 0)}.json"
        path = self.config.data_dir / "membership" / name
        assert self.loop is not None
        done = self.loop.run_in_executor(None, write_durably, path, record)

        def finished(future: asyncio.Future[None]) -> None:
            error = future.exception()
            if error is not None:
                self.halt(Halt("cannot persist", {"detail": f"writing {path} failed: {error}"}))
                return
            self.core.persisted(action.token)
            self.schedule()

        done.add_done_callback(finished)

    def _installed(self, action: ViewInstalled) -> None:
        old, view = self.view, action.view
        self.view = view
        crashed = [m for m in action.failed if m not in action.left]
        changes = []
        for node in crashed:
            by = list(action.suspected_by.get(node, ()))
            changes.append(f"failed: {node} (suspected by {by})" if by else f"failed: {node}")
        if action.left:
            changes.append(f"left: {list(action.left)}")
        if action.joined:
            changes.append(f"joined: {list(action.joined)}")
        reason = "; ".join(changes) or "no change"
        entry = {
            "vid": view.vid,
            "members": list(view.members),
            "failed": list(action.failed),
            "left": list(action.left),
            "joined": list(action.joined),
            "suspected_by": {str(k): list(v) for k, v in action.suspected_by.items()},
            "reason": reason,
        }
        self.view_history.append(entry)
        del self.view_history[:-20]
        for label, happened in (("failed", crashed), ("left", action.left), ("joined", action.joined)):
            if happened:
                self.metrics.view_changes.labels(label).inc()
        log.warning("installed view %d: members %s (%s)", view.vid, list(view.members), reason)
        if self.tracer is not None:
            record_view_change(
                self.tracer, self.config.group, view.vid, list(view.members), list(action.failed), self.node_id
            )
        self.save_view(entry)
        self.mesh.set_members(view.members, joined=action.joined)
        for node in action.failed:
            self.peer_state[node] = f"removed in view {view.vid}"
            self.last_heard.pop(node, None)
        now = self.loop.time() if self.loop else 0.0
        # A joiner needs a moment to start and dial everyone; it is not silent until then.
        grace = now + max(2.0, 4 * self.config.membership.suspicion_timeout)
        for node in action.joined:
            self.peer_state[node] = "joining"
            self.last_heard[node] = grace
        for node in self.core.peers:
            self.last_heard[node] = max(self.last_heard.get(node, now), now)
        if action.joined:
            self.admission.admitted(action.joined, view)
            self.transfers.send(action.joined, old, view)
        event = frames.encode({"t": T.VIEW_EVENT, "b": entry})
        for session in self.clients.sessions:
            if session.watch_views:
                session.conn.write([event])

    def save_view(self, entry: dict[str, Any]) -> None:
        """Saved at every install (as Derecho does): a restarted member rejoins from it, and a
        total restart will start from it."""
        path = self.config.data_dir / "membership" / "view.json"
        assert self.loop is not None
        # One writer thread for the views: saves land in the order views were installed.
        saved = self.loop.run_in_executor(self._view_writer, write_durably, path, {**entry, **view_to_dict(self.view)})
        # The trim that led to this view is kept (the view is saved with it); older ones go.
        self.loop.run_in_executor(self._view_writer, prune_trims, path.parent, self.view.vid - 1)

        def check(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.error("could not save view %d to %s: %s", entry["vid"], path, future.exception())

        saved.add_done_callback(check)

    def halt(self, action: Halt) -> None:
        if self.halted:
            return
        detail = action.detail.get("detail", "")
        self.halted = f"{action.reason}: {detail}" if detail else action.reason
        # Asked to stop and halted on the way out (the others left first): a clean stop.
        self.exit_code = 0 if self._stop.is_set() else EXIT_CODES.get(action.reason, 1)
        log.error("halting (exit code %d): %s", self.exit_code, self.halted)
        # Every send still waiting gets its one outcome: an error that says why.
        message = f"this member stopped serving writes: {self.halted}"
        for batches in self.receipts.values():
            for _, requests, session, _ in batches:
                session.error(requests, ErrorCode.HALTED, message)
            batches.clear()
        self.schedule()
        if self.loop is not None:
            # Let the errors and the status be seen for a moment, then exit with the code.
            self.loop.call_later(0.5, self.stop, self.halted)

    def _peer_data(self, node: int, header: dict[str, Any], payload: bytes) -> None:
        try:
            vid = int(header["v"])
            key = (int(header["sg"]), int(header["sh"]))
            first = int(header["i"])
            msg_nos = header["m"]
            sizes = header["n"]
            traces = header.get("x") or {}
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"DATA frame is missing or garbles {exc}") from None
        if len(msg_nos) != len(sizes) or sum(sizes) != len(payload):
            raise ProtocolError("DATA frame sizes do not add up to its payload")
        if len(sizes) == 1:
            msgs = [Msg(node, msg_nos[0], payload, traces.get(0))]
        else:
            # Views into the frame, not copies: the payloads are copied once, when re-framed.
            payload = memoryview(payload)  # type: ignore[assignment]
            ends = accumulate(sizes)
            if traces:
                msgs = [
                    Msg(node, no, payload[end - size : end], traces.get(pos))
                    for pos, (no, end, size) in enumerate(zip(msg_nos, ends, sizes, strict=True))
                ]
            else:
                msgs = [
                    Msg(node, no, payload[end - size : end]) for no, end, size in zip(msg_nos, ends, sizes, strict=True)
                ]
        if traces and self.tracer is not None:
            self.tracer.record_receive(
                destination(self.config.group, key), [(m.trace, node, m.msg_no) for m in msgs if m.trace], self.node_id
            )
        self.core.receive_data(node, key, first, msgs, vid)

    # -- applications -------------------------------------------------------------------------

    def shard_key(self, header: dict[str, Any]) -> ShardKey:
        sg = header.get("sg", 0)
        sh = header.get("sh", 0)
        if not isinstance(sg, int) or not isinstance(sh, int):
            raise RequestError(ErrorCode.BAD_REQUEST, "subgroup and shard must be integers")
        key = (sg, sh)
        if key not in self.core.shards:
            mine = ", ".join(f"subgroup {a} shard {b}" for a, b in self.core.shards) or "none"
            raise RequestError(
                ErrorCode.UNKNOWN_SHARD,
                f"member {self.node_id} is not in subgroup {sg} shard {sh}; connect to a member of it "
                f"(this member is in: {mine})",
            )
        return key

    def client_send(self, session: ClientSession, header: dict[str, Any], payload: bytes) -> None:
        requests = header.get("r")
        sizes = header.get("n")
        if not isinstance(requests, list) or not isinstance(sizes, list) or len(requests) != len(sizes):
            raise RequestError(
                ErrorCode.BAD_REQUEST, "SEND needs lists 'r' (request ids) and 'n' (sizes), equally long"
            )
        if not sizes:
            raise RequestError(ErrorCode.BAD_REQUEST, "SEND carries no messages; send at least one")
        if not all(type(n) is int and n >= 0 for n in sizes):
            raise RequestError(ErrorCode.BAD_REQUEST, "SEND sizes in 'n' must be non-negative integers")
        if sum(sizes) != len(payload):
            raise RequestError(
                ErrorCode.BAD_REQUEST, f"SEND sizes add up to {sum(sizes)}, payload has {len(payload)} bytes"
            )
        traces = header.get("x") or None
        if traces is not None and not (
            isinstance(traces, dict)
            and all(type(k) is int and 0 <= k < len(sizes) and isinstance(v, dict) for k, v in traces.items())
        ):
            raise RequestError(
                ErrorCode.BAD_REQUEST, "SEND trace field 'x' must map message positions to trace-context maps"
            )
        key = self.shard_key(header)
        if self.halted:
            raise RequestError(ErrorCode.SHUTTING_DOWN, f"this member stopped serving writes: {self.halted}")
        if self.node_id not in self.view.shard(key).senders:
            raise RequestError(ErrorCode.NOT_A_SENDER, f"member {self.node_id} is not a sender in shard {key}")
        limit = self.config.multicast.max_message_size
        if len(sizes) == 1:
            payloads: list[bytes | memoryview] = [payload]
        else:
            view = memoryview(payload)
            payloads = [view[end - size : end] for end, size in zip(accumulate(sizes), sizes, strict=True)]
        if max(sizes) > limit:
            # Refuse only the oversized ones; the rest of the batch goes ahead.
            keep = [pos for pos, size in enumerate(sizes) if size <= limit]
            for pos, size in enumerate(sizes):
                if size > limit:
                    session.error(
                        requests[pos], ErrorCode.TOO_LARGE, f"message of {size} bytes exceeds max_message_size {limit}"
                    )
            payloads = [payloads[pos] for pos in keep]
            traces = {new: traces[old] for new, old in enumerate(keep) if old in traces} if traces else None
            requests = [requests[pos] for pos in keep]
            if not payloads:
                return
        first = self.core.submit_batch(key, payloads, traces)
        if traces and self.tracer is not None:
            self._trace_publish(key, first, payloads, traces)
        self.receipts[key].append((first, requests, session, time.monotonic()))
        session.outstanding += len(requests)
        self.schedule()

    def _trace_publish(
        self, key: ShardKey, first: int, payloads: list[bytes | memoryview], traces: dict[int, Any]
    ) -> None:
        assert self.tracer is not None
        dest = destination(self.config.group, key)
        for pos, carrier in traces.items():
            if not isinstance(carrier, dict):
                continue
            span, child = self.tracer.start_multicast(dest, carrier, len(payloads[pos]), self.node_id, first + pos)
            # The message holds this very dict: peers and apps now see the publish span as parent.
            carrier.clear()
            carrier.update(child)
            self._publish_spans[(key, first + pos)] = span

    def client_gone(self, session: ClientSession) -> None:
        self.metrics.clients_disconnected.inc()
        self.transfers.provider_gone(session)
        if session.behind_since is not None:
            session.behind_since = None
            self._update_holds()

    def reader_pressure(self, session: ClientSession, behind: bool) -> None:
        """An application fell behind reading deliveries (or caught up again).

        While one does, this member holds back its RELEASED counter, so senders' windows
        close and the group slows to the reader's pace instead of buffering without bound.
        A reader still behind after client.slow_reader_timeout is disconnected, which ends
        the hold: one stuck application delays the group for a bounded time, never forever.
        """
        if behind and session.behind_since is None:
            assert self.loop is not None
            since = session.behind_since = self.loop.time()
            self.loop.call_later(self.config.client.slow_reader_timeout, self._check_slow_reader, session, since)
        elif not behind:
            session.behind_since = None
        self._update_holds()

    def _check_slow_reader(self, session: ClientSession, since: float) -> None:
        if session.behind_since == since and not session.conn.closed:
            timeout = self.config.client.slow_reader_timeout
            self._disconnect_slow_reader(
                session,
                f"this application read no deliveries fast enough for {timeout:g} s while more than "
                f"{self.config.client.hold_bytes} bytes waited for it, and was disconnected so the group can go "
                "on; read deliveries faster, or raise client.slow_reader_timeout / client.hold_bytes",
            )

    def _update_holds(self) -> None:
        for key, shard in self.core.shards.items():
            held = any(s.behind_since is not None and key in s.subscriptions for s in self.clients.sessions)
            if held != shard.held:
                shard.hold(held)
        self.schedule()

    # -- introspection ------------------------------------------------------------------------

    def view_summary(self) -> dict[str, Any]:
        return {"vid": self.view.vid, "members": list(self.view.members), "group": self.config.group}

    def waiting_for(self) -> str | None:
        if self.halted:
            return f"halted: {self.halted}"
        missing = self.mesh.missing()
        if missing and not self.ready:
            return f"connections to members {missing}"
        if self.transfers.pending:
            shards = ", ".join(f"{sg}/{sh}" for sg, sh in sorted(self.transfers.pending))
            return f"the state of shards {shards} from the members that had them"
        if self.core.wedged():
            return self.core.view_change_progress()
        return None

    def status(self) -> dict[str, Any]:
        core = self.core.status()
        return {
            "node_id": self.node_id,
            "group": self.config.group,
            "ready": self.ready and not self.halted and not self.core.wedged() and not self.transfers.pending,
            "waiting_for": self.waiting_for(),
            "halted": self.halted,
            "view": self.view_summary(),
            "view_history": self.view_history,
            "wedged": core["wedged"],
            "suspected": core["suspected"],
            "shards": core["shards"],
            "history": {
                f"{k[0]}/{k[1]}": {
                    "messages": h.count,
                    "bytes": h.nbytes,
                    "complete": h.complete,
                    "first_version": h.first_version,
                    "snapshot_version": h.base[0] if h.base is not None else None,
                }
                for k, h in self.history.items()
            },
            "joining": sorted(self.admission.joiners),
            "peers": {str(k): v for k, v in self.peer_state.items()},
            "clients": len(self.clients.sessions),
            "socket": str(self.config.socket_path),
            "http": self.http_address,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started_at, 3),
        }


def join_contacts(config: SidecarConfig, join: list[str] | None = None) -> list[str] | None:
    """Where to ask to be admitted, or None to form the group of `members`.

    A member joins when told to (`join`, membership.join) or when its data_dir holds a saved
    view: it was in a group before (it crashed, or exited after losing the majority), and the
    group may have gone on without it, so it must come back as a joiner, never form a group.
    """
    contacts = list(join or config.membership.join)
    if contacts:
        return contacts
    if (config.data_dir / "membership" / "view.json").exists():
        return [m.address for m in config.members if m.id != config.node_id]
    return None


def run(config: SidecarConfig, join: list[str] | None = None) -> int:
    """Run one member until SIGTERM or SIGINT; returns the process exit code.

    DERECHO_PROFILE=FILE writes a cProfile of the whole run to FILE (for bench/ work).
    """
    profile_to = os.environ.get("DERECHO_PROFILE")
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        try:
            return profiler.runcall(_run, config, join)
        finally:
            profiler.dump_stats(f"{profile_to}.{config.node_id}")
    return _run(config, join)


async def _main(config: SidecarConfig, join: list[str] | None) -> int:
    from .joining import JoinError, join_group

    welcome = None
    contacts = join_contacts(config, join)
    if contacts is not None:
        if config.http.address:
            # Imported now, not after admission: from the view that admits it until it connects,
            # the group waits for this member (aiohttp takes ~0.3 s to import).
            from ..api import http  # noqa: F401
        log.info("member %d joins its group through %s", config.node_id, contacts)
        try:
            welcome = await join_group(config, contacts)
        except JoinError as exc:
            log.error("halting (exit code %d): join failed: %s", EXIT_CODES["join failed"], exc)
            return EXIT_CODES["join failed"]
        log.info("admitted in view %d: members %s", welcome.view.vid, list(welcome.view.members))
    return await Sidecar(config, welcome).serve()


def _run(config: SidecarConfig, join: list[str] | None = None) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(_main(config, join))
    return uvloop.run(_main(config, join))
