"""The protocol core of one member: its view, its SST, a multicast engine per shard, and the
virtual-synchrony membership protocol that replaces one view by the next.

Events go in through the methods; `flush()` runs every rule they enabled and returns the
actions for the driver (send, deliver, persist, ...). Nothing here touches a socket, a clock
or a file, so the simulator and the runtime run exactly the same code.

Membership (Derecho's view change, for failures; see docs and derecho-protocols.md 2.5-2.6),
all through monotonic SST columns:

1. Suspect. The driver reports a failure (`suspect`); every member ORs all rows' SUSPECTED
   bits into its own, and the first suspicion wedges it: its shards send and deliver nothing
   more in this view, and its RECEIVED counters freeze. A member that finds itself suspected
   halts; one that suspects half the view or more halts too (the majority rule).
2. Propose. The leader (lowest rank not suspected) proposes removing every suspected member:
   PROPOSED bits and a proposal number. A leader that sees a committed proposal in any row
   adopts it exactly, at once (a commit is final; its own removals wait for the next view).
   Otherwise a new leader first waits until every live member's row suspects all lower ranks,
   so it has seen any proposal they acknowledged, before it proposes.
3. Acknowledge and commit. Followers copy the leader's proposal (only one that covers what
   they already hold) and acknowledge its number; the leader commits once every live member
   has acknowledged it.
4. Ragged trim. Once every live member is wedged, each shard's leader sets TRIM = the least
   RECEIVED of the shard's live members: everything below it reached every survivor, and
   nothing at or above it was delivered anywhere (a member delivers only what all members had
   received, and it reported that before it wedged). Members copy the largest TRIM they see
   and persist it; TRIM_READY says which value is on disk.
5. Install. When every live member of each of my shards has persisted the same trim, I deliver
   up to it and install the next view (the survivors, in rank order, then the joiners). My own
   messages that were not delivered go again in the new view with the same message numbers.

Joins ride the same proposal. The driver hands the leader a join request (`request_join`);
the leader wedges the view and proposes the joiner in a JOINS slot (node id + 1) beside any
removals; followers copy the slots with the rest of the proposal. Slots are written once, so a
new leader proposes the union of what the live rows hold: anything a member acknowledged stays
in. A joiner starts its own core in the new view (`GroupCore(view=...)`) once the driver has
told it the view, and receives the state of its shards from old members before it delivers.
"""

from __future__ import annotations

from typing import Any

from .actions import Action, Halt, Msg, Persist, SendRow, ShardKey, TraceContext, ViewInstalled
from .ordered import ORDERED_COLUMNS, OrderedShard
from .raw import RawShard, raw_columns
from .shard import ProtocolError
from .sst import SST
from .view import DeliveryMode, InadequateLayout, View, next_view

Shard = OrderedShard | RawShard

__all__ = ["JOIN_SLOTS", "GroupCore", "ProtocolError", "UnknownShardError"]

# Joiners admitted per view change; more wait for the next one (Derecho caps a batch too: a
# herd of joiners once crashed its leader).
JOIN_SLOTS = 8


class UnknownShardError(KeyError):
    pass


class _Columns:
    """Where the membership columns of a view's SST are (after every shard's columns)."""

    def __init__(self, start: int, members: int, shards: int) -> None:
        self.suspected = start
        self.proposed = start + members
        # Per member: 1 once it is known to have left on purpose (Derecho's "rip"). Spread like
        # suspicions, in the same row update, so nobody sees a leaver's removal without it.
        self.left = start + 2 * members
        self.wedged = start + 3 * members
        self.num_proposed = self.wedged + 1
        self.acked = self.wedged + 2
        self.committed = self.wedged + 3
        self.trim = self.wedged + 4  # per shard of the view: trim + 1, 0 while unknown
        self.trim_ready = self.trim + shards  # per shard: the trim value on disk + 1
        self.joins = self.trim_ready + shards  # JOIN_SLOTS proposed joiners: node id + 1, 0 if free
        self.end = self.joins + JOIN_SLOTS


class GroupCore:
    def __init__(
        self,
        *,
        my_node: int,
        view: View,
        window: int = 1024,
        max_inflight_bytes: int = 64 << 20,
    ) -> None:
        if my_node not in view.ranks:
            raise ValueError(f"node {my_node} is not a member of view {view.vid}")
        self.my_node = my_node
        self.window = window
        self.max_inflight_bytes = max_inflight_bytes
        self.halted: Halt | None = None
        # Frames of views I have not installed yet, replayed when I do.
        self._future: list[tuple[int, str, tuple[Any, ...]]] = []
        self._persist_tokens = 0
        self._persisting: dict[int, tuple[int, int, int]] = {}  # token -> (vid, shard index, value)
        self._out: list[Action] = []
        # Join requests the driver handed me as leader, oldest first, not yet in a proposal.
        self._pending_joins: list[int] = []
        # Per suspected node of this view: who suspected it, as first seen here.
        self._suspected_by: dict[int, tuple[int, ...]] = {}
        self._start_view(view, {})

    def _start_view(self, view: View, carry: dict[ShardKey, tuple[int, dict[int, int]]]) -> None:
        self.view = view
        self.shards: dict[ShardKey, Shard] = {}
        column = 0
        bases: dict[ShardKey, int] = {}
        self.shard_index: dict[ShardKey, int] = {}
        for sg, shards in enumerate(view.subgroups):
            for sh, layout in enumerate(shards):
                bases[(sg, sh)] = column
                self.shard_index[(sg, sh)] = len(self.shard_index)
                if layout.mode is DeliveryMode.ORDERED:
                    column += ORDERED_COLUMNS
                else:
                    column += raw_columns(len(layout.senders))
        n = len(view.members)
        self.cols = _Columns(column, n, len(self.shard_index))
        self.sst = SST(n, self.cols.end, view.ranks[self.my_node])
        self.my_rank = view.ranks[self.my_node]
        self.peers = tuple(node for node in view.members if node != self.my_node)
        for key in view.shards_of(self.my_node):
            layout = view.shard(key)
            engine = OrderedShard if layout.mode is DeliveryMode.ORDERED else RawShard
            shard = engine(
                key=key,
                vid=view.vid,
                my_node=self.my_node,
                members=list(layout.members),
                senders=list(layout.senders),
                view_ranks=view.ranks,
                sst=self.sst,
                base_column=bases[key],
                window=self.window,
                max_inflight_bytes=self.max_inflight_bytes,
            )
            if key in carry:
                shard.next_msg_no, last = carry[key]
                if isinstance(shard, RawShard):
                    shard.last_msg_no = last
            self.shards[key] = shard
        self._installing = False

    def _shard(self, key: ShardKey) -> Shard:
        try:
            return self.shards[key]
        except KeyError:
            raise UnknownShardError(
                f"node {self.my_node} is not a member of subgroup {key[0]} shard {key[1]}"
            ) from None

    # -- events -----------------------------------------------------------------------------

    def submit(self, key: ShardKey, payload: bytes | memoryview, trace: TraceContext | None = None) -> Msg:
        """A local application's message; returns it so the driver can match the delivery."""
        shard = self._shard(key)
        msg = Msg(self.my_node, shard.next_msg_no, payload, trace)
        shard.submit(msg)
        shard.next_msg_no += 1
        return msg

    def submit_batch(
        self, key: ShardKey, payloads: list[bytes | memoryview], traces: dict[int, TraceContext] | None = None
    ) -> int:
        """Many local messages at once; returns the first msg_no (the others follow in order)."""
        return self._shard(key).submit_many(payloads, traces)

    def receive_data(
        self, sender: int, key: ShardKey, first_index: int, messages: list[Msg], vid: int | None = None
    ) -> None:
        if self._other_view(vid, "data", (sender, key, first_index, messages)):
            return
        if key not in self.shards:
            raise ProtocolError(f"node {sender} sent data for subgroup {key[0]} shard {key[1]}, which I am not in")
        self.shards[key].receive(sender, first_index, messages)

    def receive_row(self, sender: int, diff: list[int], vid: int | None = None) -> None:
        if self._other_view(vid, "row", (sender, diff)):
            return
        rank = self.view.ranks.get(sender)
        if rank is None or rank == self.my_rank:
            raise ProtocolError(f"row update from node {sender}, not a peer in view {self.view.vid}")
        try:
            self.sst.merge(rank, diff)
        except ValueError as exc:
            raise ProtocolError(f"row update from node {sender}: {exc}") from None

    def _other_view(self, vid: int | None, kind: str, args: tuple[Any, ...]) -> bool:
        """Frames of a view I left are dropped; of a view I have not reached yet, kept for later."""
        if vid is None or vid == self.view.vid:
            return False
        if vid > self.view.vid:
            self._future.append((vid, kind, args))
        return True

    def suspect(self, node: int) -> None:
        """The failure detector says `node` failed (timeout or broken connection)."""
        rank = self.view.ranks.get(node)
        if rank is not None and self.halted is None:
            self.sst.set(self.cols.suspected + rank, 1)
            self._suspected_by.setdefault(node, (self.my_node,))

    def leave(self) -> None:
        """Leave the group on purpose: the others remove me without counting it as a failure
        against the majority. The driver flushes, lets the row reach the peers, then exits."""
        if self.halted is None:
            self.sst.set(self.cols.left + self.my_rank, 1)
            self.sst.set(self.cols.suspected + self.my_rank, 1)

    def request_join(self, node: int) -> str | None:
        """A node asks to join (the driver checked I lead). Returns why not, or None: it is in
        the next view change that starts, with up to JOIN_SLOTS joiners together."""
        if self.halted is not None:
            return f"this member halted ({self.halted.reason})"
        if node in self.view.ranks:
            return f"node {node} is a member of view {self.view.vid} already"
        if node not in self._pending_joins:
            self._pending_joins.append(node)
        return None

    def cancel_join(self, node: int) -> None:
        """The joiner went away before it was proposed; once proposed it joins and is then
        removed as any silent member is."""
        if node in self._pending_joins:
            self._pending_joins.remove(node)

    def leader(self) -> int:
        """The member that leads the next view change: the lowest rank not suspected."""
        own, cols = self.sst.own, self.cols
        live = [r for r in range(len(self.view.members)) if not own[cols.suspected + r]]
        return self.view.members[live[0]] if live else self.my_node

    def persisted(self, token: int) -> None:
        """A Persist action's record is durable."""
        entry = self._persisting.pop(token, None)
        if entry is None:
            return
        vid, index, value = entry
        if vid == self.view.vid and value + 1 > self.sst.own[self.cols.trim_ready + index]:
            self.sst.set(self.cols.trim_ready + index, value + 1)

    # -- rules ------------------------------------------------------------------------------

    def flush(self) -> list[Action]:
        if self.halted is not None:
            return []
        out = self._out
        self._out = []
        self._membership(out)
        if self.halted is None:
            for shard in self.shards.values():
                shard.flush()
                if shard.out:
                    out.extend(shard.out)
                    shard.out.clear()
        # Even when halting, the last row goes out: it tells the others I left or wedged.
        diff = self.sst.take_diff()
        if diff is not None and self.peers:
            out.append(SendRow(self.peers, diff, self.view.vid))
        return out

    def _membership(self, out: list[Action]) -> None:
        cols = self.cols
        sst = self.sst
        own = sst.own
        rows = sst.rows
        n = len(rows)
        # 1. Suspicions spread: a member's suspicion is everyone's, and so is knowing it left.
        # Except from a member whose row suspects too many to keep a majority: it halted on the
        # minority side of a partition, and its stale row (arriving once the partition heals)
        # must not make the majority suspect itself.
        heard: list[int] | None = None  # ranks whose suspicions count; worked out only when needed
        for r in range(n):
            if not own[cols.left + r] and any(row[cols.left + r] for row in rows):
                sst.set(cols.left + r, 1)
                sst.set(cols.suspected + r, 1)
            if own[cols.suspected + r] or not any(row[cols.suspected + r] for row in rows):
                continue
            if heard is None:
                heard = [x for x, row in enumerate(rows) if x != self.my_rank and not self._lost_majority(row)]
            by = tuple(self.view.members[x] for x in heard if rows[x][cols.suspected + r])
            if by:
                sst.set(cols.suspected + r, 1)
                self._suspected_by.setdefault(self.view.members[r], by)
        suspected = [r for r in range(n) if own[cols.suspected + r]]
        if not suspected and not own[cols.wedged]:
            proposal = any(row[cols.num_proposed] for row in rows)
            if not proposal and not (self._pending_joins and self.my_rank == 0):
                return
        if own[cols.left + self.my_rank]:
            self._halt(out, "left the group", "this member left on request")
            return
        if self.my_rank in suspected:
            by = [self.view.members[x] for x in range(n) if rows[x][cols.suspected + self.my_rank]]
            self._halt(out, "removed from the view", f"members {by} suspected this member", suspected_by=by)
            return
        # Majority rule (Derecho's): members that left on purpose do not count against it.
        departed = sum(1 for r in suspected if own[cols.left + r])
        if self._lost_majority(own):
            failed = [self.view.members[r] for r in suspected]
            self._halt(
                out,
                "lost majority",
                f"suspects {failed} of the {n} members of view {self.view.vid} (of which {departed} left); "
                "a minority must not go on",
                suspected=failed,
            )
            return
        if not own[cols.wedged]:
            for shard in self.shards.values():
                shard.wedge()
            sst.set(cols.wedged, 1)
        live = [r for r in range(n) if not own[cols.suspected + r]]
        leader = live[0]
        if leader == self.my_rank:
            self._lead(live, suspected)
        else:
            self._follow(leader)
        if own[cols.committed]:
            self._trim_and_install(out)

    def _lost_majority(self, row: list[int]) -> bool:
        """Whether this row suspects half of the view or more (members that left not counted)."""
        cols = self.cols
        n = len(self.view.members)
        departed = sum(1 for r in range(n) if row[cols.left + r])
        failed = sum(1 for r in range(n) if row[cols.suspected + r] and not row[cols.left + r])
        return failed > 0 and failed >= (n - departed + 1) // 2

    def _lead(self, live: list[int], suspected: list[int]) -> None:
        cols, sst = self.cols, self.sst
        own, rows = sst.own, sst.rows
        committed = max(row[cols.committed] for row in rows)
        if committed > own[cols.committed]:
            # A former leader committed a proposal: carry it out exactly, as it was.
            source = next(row for row in rows if row[cols.committed] == committed)
            for r in range(len(rows)):
                if source[cols.proposed + r]:
                    sst.set(cols.proposed + r, 1)
            for k in range(JOIN_SLOTS):
                if source[cols.joins + k] and not own[cols.joins + k]:
                    sst.set(cols.joins + k, source[cols.joins + k])
            number = max(own[cols.num_proposed], source[cols.num_proposed])
            sst.set(cols.num_proposed, number)
            sst.set(cols.acked, max(own[cols.acked], committed))
            sst.set(cols.committed, committed)
            return
        if own[cols.committed]:
            return
        # A commit is final, so it is adopted at once (above). Before proposing anything of its
        # own, a new leader waits until every live member suspects all lower ranks: their rows
        # then show any proposal they acknowledged, or commit they saw, from a former leader.
        lower = range(self.my_rank)
        if any(not rows[x][cols.suspected + low] for x in live for low in lower):
            return
        proposed = [r for r in range(len(rows)) if own[cols.proposed + r]]
        stale = own[cols.num_proposed] < max(row[cols.num_proposed] for row in rows)
        joins_changed = self._propose_joins(live)
        if proposed != suspected or not own[cols.num_proposed] or stale or joins_changed:
            number = max(row[cols.num_proposed] for row in rows) + 1
            for r in suspected:
                sst.set(cols.proposed + r, 1)
            sst.set(cols.num_proposed, number)
            sst.set(cols.acked, number)
        number = own[cols.num_proposed]
        if all(rows[x][cols.acked] >= number for x in live):
            sst.set(cols.committed, number)

    def _propose_joins(self, live: list[int]) -> bool:
        """Fill my JOINS slots: first what any live row holds (a former leader's proposal that
        someone acknowledged), then my pending requests. True if a slot changed."""
        cols, sst = self.cols, self.sst
        own, rows = sst.own, sst.rows
        changed = False
        for k in range(JOIN_SLOTS):
            if own[cols.joins + k]:
                continue
            held = max(rows[x][cols.joins + k] for x in live)
            if held:
                sst.set(cols.joins + k, held)
                changed = True
        taken = {own[cols.joins + k] - 1 for k in range(JOIN_SLOTS) if own[cols.joins + k]}
        for node in list(self._pending_joins):
            if node in taken:
                continue
            free = next((k for k in range(JOIN_SLOTS) if not own[cols.joins + k]), None)
            if free is None:
                break
            sst.set(cols.joins + free, node + 1)
            taken.add(node)
            changed = True
        return changed

    def _follow(self, leader: int) -> None:
        cols, sst = self.cols, self.sst
        own, lead = sst.own, sst.rows[leader]
        n = len(sst.rows)
        number = lead[cols.num_proposed]
        # Acknowledge only a proposal that covers what I already hold, so that whatever is
        # committed is the same set at every member.
        covers = all(lead[cols.proposed + r] or not own[cols.proposed + r] for r in range(n)) and all(
            not own[cols.joins + k] or own[cols.joins + k] == lead[cols.joins + k] for k in range(JOIN_SLOTS)
        )
        if number > own[cols.acked] and not own[cols.committed] and covers:
            for r in range(n):
                if lead[cols.proposed + r]:
                    sst.set(cols.proposed + r, 1)
                    sst.set(cols.suspected + r, 1)
            for k in range(JOIN_SLOTS):
                if lead[cols.joins + k] and not own[cols.joins + k]:
                    sst.set(cols.joins + k, lead[cols.joins + k])
            sst.set(cols.num_proposed, max(own[cols.num_proposed], number))
            sst.set(cols.acked, number)
        if lead[cols.committed] > own[cols.committed] and own[cols.acked] >= lead[cols.committed]:
            sst.set(cols.committed, lead[cols.committed])

    def _trim_and_install(self, out: list[Action]) -> None:
        cols, sst = self.cols, self.sst
        own, rows = sst.own, sst.rows
        n = len(rows)
        survivors = [r for r in range(n) if not own[cols.proposed + r]]
        live = [r for r in survivors if not own[cols.suspected + r]]
        meta_wedged = all(rows[r][cols.wedged] for r in live)
        ranks = self.view.ranks
        done = True
        for key, shard in self.shards.items():
            if not isinstance(shard, OrderedShard):
                continue
            index = self.shard_index[key]
            shard_live = sorted(ranks[m] for m in shard.members if ranks[m] in live)
            trim_col = cols.trim + index
            seen = max(row[trim_col] for row in rows)
            if seen > own[trim_col]:
                sst.set(trim_col, seen)
            elif not own[trim_col] and meta_wedged and shard_live and shard_live[0] == self.my_rank:
                trim = min(rows[r][shard.col_received] for r in shard_live)
                sst.set(trim_col, trim + 1)
            value = own[trim_col]
            if not value:
                done = False
                continue
            if own[cols.trim_ready + index] < value and not any(
                entry[0] == self.view.vid and entry[1] == index and entry[2] + 1 == value
                for entry in self._persisting.values()
            ):
                self._persist_tokens += 1
                token = self._persist_tokens
                self._persisting[token] = (self.view.vid, index, value - 1)
                out.append(
                    Persist(
                        self.view.vid,
                        "ragged_trim",
                        {
                            "vid": self.view.vid,
                            "subgroup": key[0],
                            "shard": key[1],
                            "trim": value - 1,
                            "members": list(self.view.members),
                        },
                        token,
                    )
                )
            if not all(rows[r][cols.trim_ready + index] == value == rows[r][trim_col] for r in shard_live):
                done = False
        if done and meta_wedged:
            self._install(out, survivors)

    def _install(self, out: list[Action], survivors: list[int]) -> None:
        old = self.view
        ranks = old.ranks
        members = tuple(old.members[r] for r in survivors)
        failed = tuple(m for m in old.members if m not in members)
        own = self.sst.own
        joined: list[int] = []
        for k in range(JOIN_SLOTS):
            node = own[self.cols.joins + k] - 1
            if node >= 0 and node not in members and node not in joined:
                joined.append(node)
        carry: dict[ShardKey, tuple[int, dict[int, int]]] = {}
        resend: dict[ShardKey, list[Msg]] = {}
        for key, shard in self.shards.items():
            if isinstance(shard, OrderedShard):
                trim = self.sst.own[self.cols.trim + self.shard_index[key]] - 1
                shard.apply_trim(trim)
                out.extend(shard.out)
                shard.out.clear()
            resend[key] = shard.undelivered_own()
            # A joiner is a new incarnation, numbering its messages from 0 again.
            last = {s: no for s, no in getattr(shard, "last_msg_no", {}).items() if s not in joined}
            carry[key] = (shard.next_msg_no, last)
        try:
            view = next_view(old, members, tuple(joined))
        except InadequateLayout as exc:
            self._halt(out, "inadequate layout", str(exc))
            return
        still_suspected = [old.members[r] for r in range(len(ranks)) if self.sst.own[self.cols.suspected + r]]
        # Leaving is not failing, in the next view too (or its majority would count them).
        still_leaving = {old.members[r] for r in range(len(ranks)) if self.sst.own[self.cols.left + r]}
        # The others still need my last row of the old view (my TRIM_READY, above all).
        diff = self.sst.take_diff()
        if diff is not None and self.peers:
            out.append(SendRow(self.peers, diff, old.vid))
        left = tuple(m for m in failed if own[self.cols.left + ranks[m]])
        suspected_by = {m: self._suspected_by.get(m, ()) for m in failed if m not in left}
        carried_by, self._suspected_by = self._suspected_by, {}
        self._start_view(view, carry)
        self._pending_joins = [n for n in self._pending_joins if n not in view.ranks]
        out.append(ViewInstalled(view, old.vid, failed, tuple(joined), left, suspected_by))
        for key, msgs in resend.items():
            shard = self.shards[key]
            for msg in msgs:
                msg.index = -1
                msg.seq = -1
                shard.submit(msg)
        for node in still_suspected:
            if node in view.ranks:
                self.suspect(node)
                self._suspected_by[node] = carried_by.get(node, (self.my_node,))
                if node in still_leaving:
                    self.sst.set(self.cols.left + view.ranks[node], 1)
        future, self._future = self._future, []
        for vid, kind, args in future:
            if kind == "row":
                self.receive_row(*args, vid=vid)
            else:
                self.receive_data(*args, vid=vid)

    def _halt(self, out: list[Action], reason: str, detail: str, **extra: Any) -> None:
        self.halted = Halt(reason, {"detail": detail, "vid": self.view.vid, **extra})
        out.append(self.halted)

    # -- introspection ------------------------------------------------------------------------

    def pending_bytes(self) -> int:
        return sum(shard.pending_bytes for shard in self.shards.values())

    def wedged(self) -> bool:
        return bool(self.sst.own[self.cols.wedged])

    def suspected(self) -> list[int]:
        own = self.sst.own
        return [node for r, node in enumerate(self.view.members) if own[self.cols.suspected + r]]

    def view_change_progress(self) -> str:
        """What the view change under way waits for, in words (for status while wedged)."""
        cols, own, rows = self.cols, self.sst.own, self.sst.rows
        members = self.view.members
        n = len(members)
        live = [r for r in range(n) if not own[cols.suspected + r]]
        gone = [members[r] for r in range(n) if own[cols.suspected + r]]
        joins = [v - 1 for k in range(JOIN_SLOTS) if (v := own[cols.joins + k])]
        what = ", ".join(
            part for part in (f"removing {gone}" if gone else "", f"adding {joins}" if joins else "") if part
        )
        head = f"view change ({what or 'starting'}) led by member {members[live[0]] if live else '?'}"
        if not own[cols.committed]:
            number = max(row[cols.num_proposed] for row in rows)
            if not number:
                return f"{head}: waiting for its proposal"
            behind = [members[r] for r in live if rows[r][cols.acked] < number]
            return f"{head}: waiting for members {behind} to acknowledge proposal {number}"
        survivors = [r for r in live if not own[cols.proposed + r]]
        unwedged = [members[r] for r in survivors if not rows[r][cols.wedged]]
        if unwedged:
            return f"{head}: committed; waiting for members {unwedged} to wedge"
        for key, index in self.shard_index.items():
            if not isinstance(self.shards.get(key), OrderedShard):
                continue  # no trim: raw shards, and shards I am not in
            value = own[cols.trim + index]
            if not value:
                return f"{head}: waiting for the ragged trim of shard {key[0]}/{key[1]}"
            slow = [members[r] for r in survivors if rows[r][cols.trim_ready + index] < value]
            if slow:
                return f"{head}: waiting for members {slow} to persist the ragged trim of shard {key[0]}/{key[1]}"
        return f"{head}: installing"

    def status(self) -> dict[str, object]:
        return {
            "vid": self.view.vid,
            "members": list(self.view.members),
            "wedged": self.wedged(),
            "suspected": self.suspected(),
            "shards": {f"{k[0]}/{k[1]}": s.frontiers() for k, s in self.shards.items()},
        }
