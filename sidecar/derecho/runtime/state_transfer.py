"""The state of ordered shards for joiners, and for applications that replay.

At the view change that admits joiners, the first old member of each of their ordered shards
(by rank in the new view) sends them the shard's state as of that change: an application's
snapshot if one provides them there, else the delivered history it keeps. A joiner holds back
its deliveries until the state of every shard is in. An application that subscribes with
replay gets the kept state first (RESTORE, then the history), then live deliveries.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.actions import Deliver, Halt, ShardKey
from ..core.ordered import ProtocolError
from ..core.view import View
from ..wire import frames
from ..wire.types import T
from .clients import ClientSession
from .history import Batch, ShardHistory

if TYPE_CHECKING:
    from .sidecar import Sidecar

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Transfer:
    """A shard's state owed to joiners, as of the view change that admitted them."""

    key: ShardKey
    to: tuple[int, ...]
    version: int  # the last version delivered in the old view (-1: none)
    batches: list[Batch]
    base: tuple[int, bytes] | None
    history: ShardHistory
    provider: ClientSession | None = None


class StateTransfers:
    def __init__(self, sidecar: Sidecar, joiner: bool) -> None:
        self.sc = sidecar
        # A joiner's ordered shards whose state has not arrived yet, what arrived so far, and
        # the deliveries held back until then.
        self.pending: set[ShardKey] = set(sidecar.history) if joiner else set()
        self._incoming: dict[ShardKey, list[Batch]] = {}
        self._incoming_base: dict[ShardKey, tuple[int, bytes]] = {}
        self._held: list[Deliver] = []
        # Snapshots asked of an application for joiners: request id -> what to send, or fall back on.
        self._requests: dict[int, Transfer] = {}
        self._ids = 0

    def hold(self, action: Deliver) -> bool:
        """Keep a joiner's delivery back while its shard's state is not in; True if held."""
        if action.shard in self.pending:
            self._held.append(action)
            return True
        return False

    def provider_gone(self, session: ClientSession) -> None:
        for request, transfer in list(self._requests.items()):
            if transfer.provider is session:
                # The application went away before its snapshot: the joiners get the history.
                del self._requests[request]
                self._stream_history(transfer)
                self.sc.schedule()

    def overdue(self) -> None:
        """The members that had my shards' state failed before sending it: start over."""
        if self.pending and not self.sc.halted:
            shards = sorted(self.pending)
            self.sc.halt(
                Halt(
                    "join failed",
                    {
                        "detail": f"the state of shards {shards} did not arrive within membership.join_timeout "
                        f"({self.sc.config.membership.join_timeout:g} s); restart this member to join again"
                    },
                )
            )

    def send(self, joined: tuple[int, ...], old: View, view: View) -> None:
        """For each ordered shard joiners are in: if I am the first (by rank in the new view) of
        the members that were in it in the old view, send them its state as of the view change:
        an application's snapshot if one provides them here, else the delivered history."""
        for key, history in self.sc.history.items():
            before = old.shard(key).members
            first = next((m for m in view.members if m in before), None)
            to = tuple(j for j in joined if key in view.shards_of(j))
            if first != self.sc.node_id or not to:
                continue
            # Frozen now: the batches are what was delivered up to the view change, nothing after.
            transfer = Transfer(key, to, history.last_version, list(history.batches), history.base, history)
            provider = min(
                (s for s in self.sc.clients.sessions if key in s.snapshots and not s.conn.closed),
                key=lambda s: s.number,
                default=None,
            )
            if provider is None:
                self._stream_history(transfer)
                continue
            self._ids += 1
            request = self._ids
            transfer.provider = provider
            self._requests[request] = transfer
            sg, sh = key
            # In the app's stream right after the last delivery of the old view: the state there.
            provider.conn.write(
                [frames.encode({"t": T.SNAPSHOT_REQUEST, "r": request, "sg": sg, "sh": sh, "v": transfer.version})]
            )
            assert self.sc.loop is not None
            self.sc.loop.call_later(self.sc.config.state.snapshot_timeout, self._snapshot_overdue, request)
            log.info("asking application %d for a snapshot of shard %s for members %s", provider.number, key, to)

    def snapshot_reply(self, session: ClientSession, header: dict[str, Any], payload: bytes) -> None:
        transfer = self._requests.get(header.get("r"))  # type: ignore[arg-type]
        if transfer is None or transfer.provider is not session:
            return  # late (the history went instead) or not asked of this application
        del self._requests[header["r"]]
        if header.get("e"):
            log.warning("application %d gave no snapshot (%s); sending the history", session.number, header["e"])
            self._stream_history(transfer)
            return
        sg, sh = transfer.key
        snap = frames.encode_parts({"t": T.STATE_SNAPSHOT, "sg": sg, "sh": sh, "v": transfer.version}, [payload])
        self.sc.mesh.send(transfer.to, snap)
        end = {"t": T.STATE_END, "sg": sg, "sh": sh, "first": -1, "complete": True, "count": 0}
        self.sc.mesh.send(transfer.to, [frames.encode(end)])
        log.info(
            "sent members %s a snapshot of shard %s at version %d (%d bytes)",
            list(transfer.to),
            transfer.key,
            transfer.version,
            len(payload),
        )
        self.sc.schedule()

    def _snapshot_overdue(self, request: int) -> None:
        transfer = self._requests.pop(request, None)
        if transfer is not None:
            log.warning(
                "no snapshot of shard %s within state.snapshot_timeout (%g s); sending the history",
                transfer.key,
                self.sc.config.state.snapshot_timeout,
            )
            self._stream_history(transfer)
            self.sc.schedule()

    def _stream_history(self, transfer: Transfer) -> None:
        sg, sh = transfer.key
        to = transfer.to
        if transfer.base is not None:
            version, snapshot = transfer.base
            self.sc.mesh.send(
                to, frames.encode_parts({"t": T.STATE_SNAPSHOT, "sg": sg, "sh": sh, "v": version}, [snapshot])
            )
        sent = count = 0
        for batch in transfer.batches:
            for messages, nbytes, frame in batch.frames({"t": T.STATE, "sg": sg, "sh": sh}):
                self.sc.mesh.send(to, frame)
                sent += nbytes
                count += messages
        first = transfer.batches[0] if transfer.batches else None
        end = {
            "t": T.STATE_END,
            "sg": sg,
            "sh": sh,
            "first": (first.vid << 32) | first.seqs[0] if first else -1,
            "complete": transfer.history.complete,
            "count": count,
        }
        self.sc.mesh.send(to, [frames.encode(end)])
        log.info("sent members %s the history of shard %s: %d messages, %d bytes", list(to), transfer.key, count, sent)

    def receive(self, header: dict[str, Any], payload: bytes) -> None:
        try:
            key = (int(header["sg"]), int(header["sh"]))
            versions, senders, sizes = header["v"], header["s"], header["n"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"STATE frame is missing or garbles {exc}") from None
        if key not in self.pending:
            raise ProtocolError(f"STATE for shard {key}, whose state this member is not waiting for")
        if not (len(versions) == len(senders) == len(sizes)) or sum(sizes) != len(payload) or not versions:
            raise ProtocolError("STATE frame sizes do not add up to its payload")
        vid = versions[0] >> 32
        if any(v >> 32 != vid for v in versions):
            raise ProtocolError("STATE frame mixes versions of several views")
        try:
            batch = Batch(
                vid, (payload,), array("Q", sizes), array("q", [v & 0xFFFFFFFF for v in versions]), array("q", senders)
            )
        except (TypeError, OverflowError) as exc:
            raise ProtocolError(f"STATE frame has a bad size, version or sender: {exc}") from None
        self._incoming.setdefault(key, []).append(batch)

    def receive_snapshot(self, header: dict[str, Any], payload: bytes) -> None:
        try:
            key = (int(header["sg"]), int(header["sh"]))
            version = int(header["v"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"STATE_SNAPSHOT frame is missing or garbles {exc}") from None
        if key not in self.pending:
            raise ProtocolError(f"STATE_SNAPSHOT for shard {key}, whose state this member is not waiting for")
        self._incoming_base[key] = (version, payload)

    def receive_end(self, header: dict[str, Any]) -> None:
        try:
            key = (int(header["sg"]), int(header["sh"]))
            complete = bool(header["complete"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"STATE_END frame is missing or garbles {exc}") from None
        if key not in self.pending:
            raise ProtocolError(f"STATE_END for shard {key}, whose state this member is not waiting for")
        history = self.sc.history[key]
        history.base = self._incoming_base.pop(key, None)
        for batch in self._incoming.pop(key, []):
            history.add(batch)
        history.complete = history.complete and complete
        self.pending.discard(key)
        log.info(
            "received the state of shard %s: %d messages (%s)",
            key,
            history.count,
            "complete" if history.complete else f"incomplete: it starts at version {history.first_version}",
        )
        for session in self.sc.clients.sessions:
            if key in session.replay:
                self._replay_to(session, key)
        held, self._held = self._held, []
        for action in held:
            if action.shard == key:
                self.sc.deliver(action)
            else:
                self._held.append(action)
        if not self.pending:
            self.sc.save_view(self.sc.view_history[-1])

    def replay(self, session: ClientSession, key: ShardKey) -> None:
        """An application subscribed with replay: what this member kept comes first."""
        session.replay.add(key)
        if key not in self.pending:
            self._replay_to(session, key)

    def _replay_to(self, session: ClientSession, key: ShardKey) -> None:
        history = self.sc.history.get(key)
        if history is None:
            return
        sg, sh = key
        if history.base is not None:
            version, snapshot = history.base
            session.conn.write(frames.encode_parts({"t": T.RESTORE, "sg": sg, "sh": sh, "v": version}, [snapshot]))
        for batch in history:
            for _, _, frame in batch.frames({"t": T.DELIVER, "sg": sg, "sh": sh}, seqs=True):
                session.conn.write(frame)
