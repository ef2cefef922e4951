"""A seeded, deterministic network of protocol cores, with crash faults.

Links are FIFO per ordered pair of members (as TCP is); the scheduler picks, from one seeded
random generator, which member runs next, how many of its waiting frames it takes from which
links (interleaving links arbitrarily), and when applications submit. The same seed always
replays the same run.

Faults (a scenario with `crashes > 0`; needs the core's membership API, `GroupCore.suspect`):

- A member crashes at a random step, right after it emitted its k-th `Persist` (in the middle
  of a view change), or, being the leader (lowest-ranked survivor), just after the first view
  change began. A crashed member never runs again; frames to it are lost; of the frames it had
  in flight, each outgoing link keeps a random prefix (TCP may or may not have sent them).
- Each survivor's failure detector reports the crash (`suspect`) after its own seeded delay.
- `Persist` completes (`persisted(token)`) after a seeded delay unless the member crashed first.
- A member that halts (`Halt`) stops running like a crashed one, and the others suspect it.
- Optionally a live member is falsely suspected by another (a timeout on a slow link); the
  connection breaks both ways, so it suspects that member in turn.
- Optionally a member leaves on purpose (`GroupCore.leave`, Derecho's rip): it halts, and all
  its frames reach the others (the driver lets its last row out before it exits).
- Optionally a partition cuts a minority off: frames across the cut wait (TCP retransmits
  them once the cut heals, if both ends still run). Each member's failure detector, after its own delay,
  suspects every member across the cut at once (they all fell silent together), unless the
  cut healed first (it heard them again).
  The majority goes on; the minority must halt. At the heal, each halted minority member
  restarts as a joiner (a fresh core under a new node id, as a restarted process is).
- Optionally new members join (`GroupCore.request_join` at the member that leads): a joiner
  starts its core in the first view that lists it, seeded with the state of its shards (the
  deliveries of the member whose install created it, as a state transfer would carry them).

A run ends when nothing is in flight, nothing is scheduled and flushing every live member
produces no action. Everything a member did is recorded for the checkers (checkers.py).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..core import actions as core_actions
from ..core.actions import Deliver, Halt, Msg, SendData, SendRow, ShardKey, Stable
from ..core.group import GroupCore
from ..core.view import DeliveryMode, ShardLayout, View


class _Missing:
    """Stands in for an action type the core does not define yet (isinstance is always false)."""


# The membership actions land in the core with virtual synchrony; until then runs have no faults.
Persist: Any = getattr(core_actions, "Persist", _Missing)
ViewInstalled: Any = getattr(core_actions, "ViewInstalled", _Missing)


def membership_supported() -> bool:
    """Whether the core implements failures and view changes (so crash scenarios can run)."""
    return hasattr(GroupCore, "suspect")


class CoreError(RuntimeError):
    """The core raised while the simulator drove it; the message names the seed, step and event."""


class MembershipUnsupported(RuntimeError):
    """A crash scenario was asked for, but the core has no membership API yet."""


@dataclass
class DataFrame:
    sender: int
    key: ShardKey
    first_index: int
    entries: list[tuple[int, bytes]]
    vid: int | None = None


@dataclass
class RowFrame:
    sender: int
    diff: list[int]
    vid: int | None = None


Frame = DataFrame | RowFrame


@dataclass
class Delivered:
    key: ShardKey
    vid: int
    seq: int
    sender: int
    msg_no: int
    payload: bytes
    # The view the member had installed when it delivered (Deliver.vid must be that view).
    at_vid: int = 0
    step: int = -1


@dataclass
class ViewRecord:
    """One ViewInstalled action of a member."""

    vid: int
    members: tuple[int, ...]
    previous_vid: int
    failed: tuple[int, ...]
    view: View | None = None
    step: int = -1


@dataclass
class HaltRecord:
    reason: str
    detail: dict[str, Any]
    step: int = -1


@dataclass
class PersistRecord:
    vid: int
    what: str
    record: dict[str, Any]
    token: int
    emitted: int
    completed: int = -1


@dataclass
class Member:
    node: int
    core: GroupCore
    delivered: dict[ShardKey, list[Delivered]] = field(default_factory=dict)
    submitted: dict[ShardKey, list[int]] = field(default_factory=dict)
    stable_raw: dict[ShardKey, list[int]] = field(default_factory=dict)
    # Payloads as submitted, to prove deliveries (resends included) carry what was sent.
    payloads: dict[ShardKey, dict[int, bytes]] = field(default_factory=dict)
    # The view each message was submitted in (a later delivery view means it went again).
    submitted_vid: dict[ShardKey, dict[int, int]] = field(default_factory=dict)
    views: list[ViewRecord] = field(default_factory=list)
    halts: list[HaltRecord] = field(default_factory=list)
    persists: list[PersistRecord] = field(default_factory=list)
    # Nodes its failure detector reported (suspect calls), with the step.
    suspected: list[tuple[int, int]] = field(default_factory=list)
    # A joiner: the view it joined in, and who gave it its state.
    first_view: View | None = None
    state_from: dict[ShardKey, int] = field(default_factory=dict)
    # Shards whose state has not arrived yet, and what it delivered meanwhile (held back).
    awaiting: dict[ShardKey, list[Delivered]] = field(default_factory=dict)
    crashed_at: int | None = None
    halted_at: int | None = None
    # When it was asked to leave the group (GroupCore.leave).
    left_at: int | None = None
    # Why it went down, in words ("crash at step 40", "halt: lost majority", ...).
    fault: str = ""
    vid: int = 0

    @property
    def alive(self) -> bool:
        return self.crashed_at is None and self.halted_at is None


@dataclass
class Scenario:
    """What a run does; every field has a default so a seed alone picks a run."""

    members: int = 3
    shards: int = 1
    mode: DeliveryMode = DeliveryMode.ORDERED
    messages: int = 60
    window: int = 8
    max_inflight_bytes: int = 1 << 20
    # Fraction of members that never send (at least one sender always remains).
    quiet_fraction: float = 0.3
    # -- faults (0 crashes: the fault-free run, exactly as before faults existed) --
    # Members that crash (at most a minority; every shard keeps a sender).
    crashes: int = 0
    # One of the crashes hits the leader (lowest-ranked survivor) as the first view change starts.
    leader_crash: bool = False
    # One of the crashes hits a member right after it emits a Persist (mid view change).
    persist_crash: bool = False
    # Live members wrongly suspected by one peer (they get removed and must halt).
    false_suspicions: int = 0
    # Members that leave on purpose (GroupCore.leave) at a random step.
    leaves: int = 0
    # New members that ask to join at a random step (ordered shards only: raw ones carry no state).
    joins: int = 0
    # A partition that cuts a minority off at a random step, healed `heal_after` steps later.
    partition: bool = False
    heal_after: int = 200
    # Crashed members' in-flight frames: each outgoing link keeps a random prefix (else all arrive).
    partial_delivery: bool = True
    # Steps until a survivor's failure detector reports a crash: uniform in 1..suspect_delay.
    suspect_delay: int = 40
    # Steps until a Persist is durable: uniform in 0..persist_delay.
    persist_delay: int = 5
    # Timed crashes fall in steps 1..crash_horizon (0: derived from the number of messages).
    crash_horizon: int = 0

    @property
    def faulty(self) -> bool:
        return self.crashes > 0 or self.false_suspicions > 0 or self.leaves > 0 or self.joins > 0 or self.partition


@dataclass
class CrashPlan:
    """One planned crash: who (None: the leader, chosen when the first view change starts) and when."""

    kind: str  # "step" | "persist" | "leader"
    victim: int | None = None
    step: int = 0  # for "step"
    nth_persist: int = 1  # for "persist": crash right after emitting this many Persists
    leader_delay: int | None = None  # for "leader": steps after the first suspicion, or None: at its next Persist
    armed: bool = False  # "leader": the first view change has started
    done: bool = False


class Cluster:
    def __init__(self, seed: int, scenario: Scenario | None = None, trace: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.scenario = scenario or Scenario()
        sc = self.scenario
        if sc.faulty and not membership_supported():
            raise MembershipUnsupported(
                f"seed {seed}: the scenario has faults but the core has no membership API (GroupCore.suspect)"
            )
        nodes = list(range(sc.members))
        # Split members into shards round-robin, like a layout function would.
        shard_members = [nodes[i :: sc.shards] for i in range(sc.shards)]
        shard_layouts = []
        for members in shard_members:
            senders = [n for n in members if self.rng.random() >= sc.quiet_fraction] or [members[0]]
            shard_layouts.append(ShardLayout(tuple(members), tuple(senders), sc.mode))
        self.view = View(0, tuple(nodes), (tuple(shard_layouts),))
        self.members = {
            n: Member(
                n, GroupCore(my_node=n, view=self.view, window=sc.window, max_inflight_bytes=sc.max_inflight_bytes)
            )
            for n in nodes
        }
        self.links: dict[tuple[int, int], deque[Frame]] = {(a, b): deque() for a in nodes for b in nodes if a != b}
        self.steps = 0
        # Scheduled events: (step, order, kind, node, argument); order keeps equal steps FIFO.
        self.events: list[tuple[int, int, str, int, int]] = []
        self._order = 0
        self.plans: list[CrashPlan] = []
        # Every member a plan takes down (crash victims, falsely suspected, leaving members).
        self.reserved: set[int] = set()
        self.view_change_started: int | None = None
        self.trace: list[str] | None = [] if trace else None
        # Messages the scenario still has to submit (dropped if no live member can send any more).
        self.to_send = self.scenario.messages
        self.join_requests = {}
        # The partition: the minority side (planned), whether it is cut now, restarts after the heal.
        self.minority: set[int] = set()
        self.cut = False
        self.restarted: dict[int, int] = {}  # old node -> the node id it rejoined under
        self._next_id = len(nodes)
        if sc.faulty:
            self._plan_faults()

    # -- fault planning -------------------------------------------------------------------------

    def removable(self, nodes: set[int]) -> bool:
        """Whether these members can all go down and leave a majority and a sender in every shard."""
        if 2 * len(nodes) >= len(self.view.members):
            return False
        return all(any(s not in nodes for s in shard.senders) for shards in self.view.subgroups for shard in shards)

    def _plan_faults(self) -> None:
        sc = self.scenario
        rng = self.rng
        horizon = sc.crash_horizon or 30 + 3 * sc.messages
        kinds = ["step"] * sc.crashes
        if sc.crashes >= 2 and sc.leader_crash:
            kinds[1] = "leader"
        if sc.crashes >= 2 and sc.persist_crash:
            kinds[-1] = "persist" if kinds[-1] == "step" else kinds[-1]
        static = [k for k in kinds if k != "leader"]
        order = list(self.view.members)
        rng.shuffle(order)
        # Victims for the timed and Persist crashes, leaving room for the leader crash and the
        # falsely suspected members (fewer if the layout cannot lose that many).
        victims: list[int] = []
        for extra in range(len(kinds) - len(static) + sc.false_suspicions + sc.leaves, -1, -1):
            found = next(
                (c for c in itertools.combinations(order, len(static) + extra) if self.removable(set(c))), None
            )
            if found is not None:
                victims = list(found[: len(static)])
                break
        victim_iter = iter(victims)
        for kind in kinds:
            if kind == "leader":
                self.plans.append(CrashPlan("leader", leader_delay=rng.choice((None, 0, 1, 3, 10))))
                continue
            victim = next(victim_iter, None)
            if victim is None:
                continue
            if kind == "step":
                plan = CrashPlan("step", victim, step=rng.randint(1, horizon))
                self._schedule(plan.step, "crash", victim, len(self.plans))
            else:
                plan = CrashPlan("persist", victim, nth_persist=rng.choice((1, 1, 1, 2)))
            self.plans.append(plan)
        taken = set(victims)
        for _ in range(sc.false_suspicions):
            candidates = [n for n in self.view.members if n not in taken and self.removable({*taken, n})]
            if not candidates:
                break
            target = rng.choice(candidates)
            taken.add(target)
            by = rng.choice([n for n in self.view.members if n != target])
            self._schedule(rng.randint(1, horizon), "false-suspect", by, target)
        for _ in range(sc.leaves):
            candidates = [n for n in self.view.members if n not in taken and self.removable({*taken, n})]
            if not candidates:
                break
            leaver = rng.choice(candidates)
            taken.add(leaver)
            self._schedule(rng.randint(1, horizon), "leave", leaver, 0)
        if sc.partition:
            # The largest minority the layout can lose, beside the members other faults take.
            side: list[int] = []
            for size in range(len(self.view.members) // 2, 0, -1):
                free = [n for n in order if n not in taken]
                found = next((c for c in itertools.combinations(free, size) if self.removable({*taken, *c})), None)
                if found is not None:
                    side = list(found)
                    break
            if side:
                self.minority = set(side)
                taken |= self.minority
                at = rng.randint(1, horizon)
                self._schedule(at, "partition", side[0], 0)
                self._schedule(at + rng.randint(1, sc.heal_after), "heal", side[0], 0)
        self.reserved = taken
        for _ in range(sc.joins):
            self._schedule(rng.randint(1, horizon), "join", self._new_id(), 0)
        # Join requests made (node -> step), for the view checker: only these may be added.
        self.join_requests: dict[int, int] = {}

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _across(self, a: int, b: int) -> bool:
        """Whether a link from a to b crosses the partition while it is cut."""
        return self.cut and ((a in self.minority) != (b in self.minority))

    def _schedule(self, step: int, kind: str, node: int, arg: int) -> None:
        self._order += 1
        heapq.heappush(self.events, (step, self._order, kind, node, arg))

    def _note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"[{self.steps:6}] {text}")

    # -- driving ------------------------------------------------------------------------------

    def live_nodes(self) -> list[int]:
        return [n for n, m in self.members.items() if m.alive]

    def _call(self, member: Member, what: str, fn, *args, **kwargs):
        """Call into a member's core; an exception becomes a CoreError naming seed, step and event."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise CoreError(
                f"seed {self.seed}: step {self.steps}: node {member.node} raised {type(exc).__name__} on {what}: {exc}"
            ) from exc

    def _apply(self, member: Member) -> int:
        """Flush a member and carry out its actions; returns how many actions it produced."""
        actions = self._call(member, "flush()", member.core.flush)
        node = member.node
        for done, action in enumerate(actions, 1):
            if isinstance(action, SendData):
                entries = [(m.msg_no, bytes(m.payload)) for m in action.messages]
                vid = getattr(action, "vid", None)
                for peer in action.to:
                    if self.members[peer].alive:
                        self.links[(node, peer)].append(DataFrame(node, action.shard, action.first_index, entries, vid))
            elif isinstance(action, SendRow):
                vid = getattr(action, "vid", None)
                for peer in action.to:
                    if self.members[peer].alive:
                        self.links[(node, peer)].append(RowFrame(node, list(action.diff), vid))
            elif isinstance(action, Deliver):
                held = member.awaiting.get(action.shard)
                log = held if held is not None else member.delivered.setdefault(action.shard, [])
                for m in action.messages:
                    log.append(
                        Delivered(
                            action.shard,
                            action.vid,
                            m.seq,
                            m.sender,
                            m.msg_no,
                            bytes(m.payload),
                            member.vid,
                            self.steps,
                        )
                    )
            elif isinstance(action, Stable):
                member.stable_raw.setdefault(action.shard, []).extend(m.msg_no for m in action.messages)
            elif isinstance(action, Persist):
                record = PersistRecord(action.vid, action.what, action.record, action.token, self.steps)
                member.persists.append(record)
                self._schedule(
                    self.steps + self.rng.randint(0, self.scenario.persist_delay), "persisted", node, action.token
                )
                self._note(f"node {node} persist {action.what} vid {action.vid} token {action.token}")
                if self._persist_crash(member):
                    self._note(f"node {node} drops {len(actions) - done} later actions of the same flush")
                    return len(actions)
            elif isinstance(action, ViewInstalled):
                view = action.view
                member.views.append(
                    ViewRecord(
                        view.vid, tuple(view.members), action.previous_vid, tuple(action.failed), view, self.steps
                    )
                )
                previous = member.views[-2].view if len(member.views) > 1 else (member.first_view or self.view)
                member.vid = view.vid
                for joiner in getattr(action, "joined", ()):
                    if joiner not in self.members:
                        self._create_joiner(joiner, view)
                    self._transfer_state(self.members[joiner], previous, member)
                self._note(
                    f"node {node} installs view {view.vid} {list(view.members)} "
                    f"(from {action.previous_vid}, failed {list(action.failed)})"
                )
            elif isinstance(action, Halt):
                # The rest of this flush still goes out (its last row tells the others that it
                # left or wedged); then the member stops.
                member.halts.append(HaltRecord(action.reason, dict(action.detail), self.steps))
                self._note(f"node {node} halts: {action.reason} ({action.detail})")
            else:
                raise CoreError(
                    f"seed {self.seed}: node {node} emitted an action the simulator does not know: {action!r}"
                )
        if member.halts and member.alive:
            self._down(member, halted=True, why=f"halt: {member.halts[-1].reason}")
        return len(actions)

    def _create_joiner(self, node: int, view: View) -> None:
        """A joiner's core starts in the view that lists it; it holds back its deliveries per
        shard until that shard's state arrives (`_transfer_state`)."""
        sc = self.scenario
        core = GroupCore(my_node=node, view=view, window=sc.window, max_inflight_bytes=sc.max_inflight_bytes)
        joiner = Member(node, core, first_view=view, vid=view.vid)
        joiner.awaiting = {key: [] for key in view.shards_of(node)}
        for other in self.members:
            self.links[(node, other)] = deque()
            self.links[(other, node)] = deque()
        self.members[node] = joiner
        self._note(f"node {node} starts in view {view.vid}")

    def _transfer_state(self, joiner: Member, previous: View, source: Member) -> None:
        """`source` just installed the joiner's first view: for each shard of the joiner that
        `source` was in, it sends what it delivered (all of the old view, by virtual synchrony)."""
        for key in list(joiner.awaiting):
            if source.node not in previous.shard(key).members:
                continue
            held = joiner.awaiting.pop(key)
            joiner.delivered[key] = [*source.delivered.get(key, []), *held]
            joiner.state_from[key] = source.node
            self._note(f"node {joiner.node} gets the state of shard {key} from node {source.node}")

    def _request_join(self, node: int) -> None:
        """The joiner asks the member that leads the most recent view; retries until admitted."""
        if node in self.members:
            return
        if not self.live_nodes():
            self._note(f"node {node} gives up joining: no member is left")
            self.join_requests.pop(node, None)
            return
        leaders = [m for m in self.members.values() if m.alive and m.core.leader() == m.node]
        if not leaders:
            self._schedule(self.steps + 10, "join", node, 0)
            return
        leader = max(leaders, key=lambda m: (m.core.view.vid, -m.node))
        refused = self._call(leader, f"request_join({node})", leader.core.request_join, node)
        self.join_requests.setdefault(node, self.steps)
        self._note(f"node {node} asks node {leader.node} to join: {refused or 'accepted'}")
        if refused is not None:
            self._schedule(self.steps + 10, "join", node, 0)
            return
        # A leader that crashes before proposing it drops the request: ask again later.
        self._schedule(self.steps + 4 * self.scenario.suspect_delay, "join", node, 0)
        self._apply(leader)

    def _submit(self, member: Member) -> bool:
        view = member.core.view
        senders = [k for k in member.core.shards if member.node in view.shard(k).senders]
        if not senders:
            return False
        key = self.rng.choice(senders)
        size = self.rng.choice((0, 1, 10, 100, 3000))
        payload = self.rng.randbytes(size)
        msg = self._call(member, f"submit({key})", member.core.submit, key, payload)
        member.submitted.setdefault(key, []).append(msg.msg_no)
        member.payloads.setdefault(key, {})[msg.msg_no] = payload
        member.submitted_vid.setdefault(key, {})[msg.msg_no] = view.vid
        return True

    def _receive(self, member: Member) -> None:
        inbound = [
            link for link in self.links if link[1] == member.node and self.links[link] and not self._across(*link)
        ]
        if not inbound:
            return
        core = member.core
        # Take a random number of frames, interleaving the links at random but FIFO within each.
        for _ in range(self.rng.randint(1, 6)):
            inbound = [link for link in inbound if self.links[link]]
            if not inbound:
                break
            frame = self.links[self.rng.choice(inbound)].popleft()
            kwargs = {} if frame.vid is None else {"vid": frame.vid}
            if isinstance(frame, DataFrame):
                msgs = [Msg(frame.sender, no, payload) for no, payload in frame.entries]
                self._call(
                    member,
                    f"data from {frame.sender} ({frame.key}, index {frame.first_index}, vid {frame.vid})",
                    core.receive_data,
                    frame.sender,
                    frame.key,
                    frame.first_index,
                    msgs,
                    **kwargs,
                )
            else:
                self._call(
                    member,
                    f"row from {frame.sender} {frame.diff} (vid {frame.vid})",
                    core.receive_row,
                    frame.sender,
                    frame.diff,
                    **kwargs,
                )

    # -- faults -------------------------------------------------------------------------------

    def _down(self, member: Member, *, halted: bool, why: str) -> None:
        """The member stops for good: links to it are cut, its own keep a random prefix, peers suspect it."""
        node = member.node
        if halted:
            member.halted_at = self.steps
        else:
            member.crashed_at = self.steps
        member.fault = why
        self._note(f"node {node} down: {why}")
        # A member that left on purpose let its last frames out; a crash or a halt may cut them.
        partial = self.scenario.partial_delivery and member.left_at is None
        for (a, b), link in self.links.items():
            if b == node:
                link.clear()
            elif a == node and link and partial:
                keep = self.rng.randint(0, len(link))
                for _ in range(len(link) - keep):
                    link.pop()
        for peer, other in self.members.items():
            if peer != node and other.alive:
                self._schedule(self.steps + self.rng.randint(1, self.scenario.suspect_delay), "suspect", peer, node)
        if self.to_send and not any(
            m.node in layout.senders
            for m in self.members.values()
            if m.alive
            for shards in m.core.view.subgroups
            for layout in shards
        ):
            self._note(f"no live sender is left: {self.to_send} messages are never submitted")
            self.to_send = 0

    def _crash(self, plan: CrashPlan, why: str) -> None:
        plan.done = True
        member = self.members[plan.victim] if plan.victim is not None else None
        if member is None or not member.alive:
            return
        self._down(member, halted=False, why=f"crash ({plan.kind}) at step {self.steps}{why}")

    def _persist_crash(self, member: Member) -> bool:
        """Crash the member right after a Persist if a plan says so; True if it crashed."""
        for plan in self.plans:
            if plan.done or plan.victim != member.node:
                continue
            if plan.kind == "persist" and len(member.persists) >= plan.nth_persist:
                self._crash(plan, f", right after its Persist #{len(member.persists)}")
                return True
            if (
                plan.kind == "leader"
                and plan.armed
                and plan.leader_delay is None
                and member.persists[-1].emitted >= (self.view_change_started or 0)
            ):
                self._crash(plan, ", the leader, right after its first Persist of the view change")
                return True
        return False

    def _arm_leader_crash(self) -> None:
        """The first view change started: pick the leader (lowest-ranked survivor) as the victim."""
        self.view_change_started = self.steps
        planned = {p.victim for p in self.plans if p.victim is not None} | self.reserved
        down = {n for n, m in self.members.items() if not m.alive}
        for plan in self.plans:
            if plan.kind != "leader" or plan.done:
                continue
            leader = next((n for n in self.view.members if n not in down), None)
            candidates = [n for n in self.view.members if n not in down and n not in planned]
            # The leader itself if the layout allows losing it, else the lowest-ranked member that may go.
            victim = next((n for n in candidates if self.removable({*planned, *down, n})), None)
            if victim is None:
                plan.done = True
                self._note("leader crash skipped: no member may go down")
                continue
            plan.victim, plan.armed = victim, True
            planned.add(victim)
            self.reserved.add(victim)
            self._note(f"leader crash armed: node {victim} (leader {leader})")
            if plan.leader_delay is not None:
                self._schedule(self.steps + plan.leader_delay, "crash", victim, self.plans.index(plan))

    def _partition(self) -> None:
        self.cut = True
        self._note(f"partition: {sorted(self.minority)} cut off from the rest")
        for node, member in self.members.items():
            if member.alive:
                self._schedule(self.steps + self.rng.randint(1, self.scenario.suspect_delay), "cut-suspect", node, 0)

    def _heal(self) -> None:
        self.cut = False
        self._note("partition healed")
        for node in sorted(self.minority):
            self._schedule(self.steps + self.rng.randint(1, 2 * self.scenario.suspect_delay), "restart", node, 0)

    def _restart(self, node: int, attempt: int) -> None:
        """A minority member, once it halted, comes back as a joiner (its supervisor restarts it).
        One that is still up a while after the heal never noticed the cut: it stays as it is."""
        if self.members[node].alive:
            if attempt < 10:
                self._schedule(self.steps + self.scenario.suspect_delay, "restart", node, attempt + 1)
            return
        if node in self.restarted or not self.live_nodes():
            return
        self.restarted[node] = self._new_id()
        self._note(f"node {node} restarts as joiner {self.restarted[node]}")
        self._request_join(self.restarted[node])

    def _fire(self, kind: str, node: int, arg: int) -> None:
        if kind == "join":
            self._request_join(node)
            return
        if kind == "partition":
            self._partition()
            return
        if kind == "heal":
            self._heal()
            return
        if kind == "restart":
            self._restart(node, arg)
            return
        if kind == "cut-suspect":
            member = self.members[node]
            if not self.cut or not member.alive:
                return  # healed first: the detector heard the other side again
            across = [n for n in member.core.view.members if self._across(node, n)]
            self._note(f"node {node} suspects {across}, silent across the cut")
            for other in across:
                member.suspected.append((other, self.steps))
                self._call(member, f"suspect({other})", member.core.suspect, other)
            self._apply(member)
            return
        member = self.members[node]
        if kind == "crash":
            plan = self.plans[arg]
            if not plan.done:
                self._crash(plan, "")
            return
        if not member.alive:
            return
        if kind == "suspect" or kind == "false-suspect":
            if any(n == arg for n, _ in member.suspected):
                return
            if kind == "false-suspect":
                if not self.members[arg].alive:
                    return
                self._note(f"node {node} falsely suspects live node {arg}; the connection breaks")
                # A broken connection: the wrongly suspected member notices too.
                self._schedule(self.steps + self.rng.randint(1, self.scenario.suspect_delay), "suspect", arg, node)
            member.suspected.append((arg, self.steps))
            self._note(f"node {node} suspects {arg}")
            first = self.view_change_started is None
            self._call(member, f"suspect({arg})", member.core.suspect, arg)
            if first:
                self._arm_leader_crash()
        elif kind == "leave":
            member.left_at = self.steps
            self._note(f"node {node} leaves the group")
            self._call(member, "leave()", member.core.leave)
        elif kind == "persisted":
            for record in member.persists:
                if record.token == arg and record.completed < 0:
                    record.completed = self.steps
            self._call(member, f"persisted({arg})", member.core.persisted, arg)
        else:  # pragma: no cover - the kinds are fixed above
            raise AssertionError(kind)
        if member.alive:
            self._apply(member)

    def _fire_due(self) -> None:
        events = self.events
        while events and events[0][0] <= self.steps:
            _, _, kind, node, arg = heapq.heappop(events)
            self._fire(kind, node, arg)

    def run(self, max_steps: int = 200_000) -> None:
        """Submit the scenario's messages at random moments, then run until quiet."""
        while self.steps < max_steps:
            self.steps += 1
            self._fire_due()
            nodes = self.live_nodes()
            if not nodes:
                if self.quiet():
                    return
                continue
            member = self.members[self.rng.choice(nodes)]
            if self.to_send and self.rng.random() < 0.3:
                for _ in range(self.rng.randint(1, 4)):
                    if self.to_send and member.alive and self._submit(member):
                        self.to_send -= 1
            else:
                self._receive(member)
            if member.alive:
                self._apply(member)
            if not self.to_send and self.quiet():
                return
        raise RuntimeError(f"seed {self.seed}: no quiescence after {max_steps} steps; {self.describe()}")

    def quiet(self) -> bool:
        """Nothing in flight or scheduled, and a flush of every live member produces nothing."""
        if any(self.links.values()):
            return False
        # Flush everyone once more: a quiet network with nothing left to do is the end.
        busy = False
        for node in self.live_nodes():
            if self.members[node].alive and self._apply(self.members[node]):
                busy = True
        if busy or any(self.links.values()):
            return False
        if self.events:
            # Idle until the next scheduled event (a suspicion, a finished Persist, a crash).
            self.steps = max(self.steps, self.events[0][0] - 1)
            return False
        for plan in self.plans:
            if not plan.done and plan.victim is not None:
                # Its trigger never came (no Persist, no view change): it crashes now, while idle.
                self._crash(plan, ", while idle (its trigger never came)")
                return False
        return True

    def describe(self) -> str:
        """Where each member stands, for a report on a run that did not finish."""
        parts = []
        for node, member in self.members.items():
            if not member.alive:
                parts.append(f"node {node}: {member.fault}")
                continue
            status = member.core.status()
            parts.append(f"node {node}: view {status.get('vid')} {status.get('members')} {status}")
        inflight = sum(len(link) for link in self.links.values())
        return f"{inflight} frames in flight, {len(self.events)} events scheduled; " + "; ".join(parts)
