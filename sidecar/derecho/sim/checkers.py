"""Invariant checks over a finished simulation (DESIGN.md section 3).

They read only what the simulator recorded per member (deliveries with their view, installed
views, halts, suspicions, crashes), so a history can also be written by hand to prove that a
checker fires. "Live" members are those that never crashed or halted.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..core.actions import ShardKey
from ..core.view import DeliveryMode, ShardLayout, View
from .cluster import Cluster, Delivered, Member


class InvariantViolation(AssertionError):
    pass


def _fail(cluster: Cluster, text: str) -> None:
    raise InvariantViolation(f"seed {cluster.seed}: {text}")


def _shards(cluster: Cluster) -> Iterator[tuple[ShardKey, ShardLayout]]:
    """The shards of the first view, with every member and sender any view gave them (joiners)."""
    views = _agreed_views(cluster)
    for sg, shards in enumerate(cluster.view.subgroups):
        for sh, shard in enumerate(shards):
            members, senders = list(shard.members), list(shard.senders)
            for vid in sorted(views):
                layout = views[vid].subgroups[sg][sh]
                members += [m for m in layout.members if m not in members]
                senders += [m for m in layout.senders if m not in senders]
            yield (sg, sh), ShardLayout(tuple(members), tuple(senders), shard.mode)


def _live(cluster: Cluster, nodes) -> list[int]:
    return [n for n in nodes if cluster.members[n].alive]


def _ident(d: Delivered) -> tuple[int, int]:
    return (d.sender, d.msg_no)


def _by_view(log: list[Delivered]) -> dict[int, list[Delivered]]:
    out: dict[int, list[Delivered]] = {}
    for d in log:
        out.setdefault(d.vid, []).append(d)
    return out


def _per_sender(log: list[Delivered]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in log:
        out.setdefault(d.sender, []).append(d.msg_no)
    return dict(sorted(out.items()))


def _first_difference(a: list, b: list) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"position {i}: {x} vs {y}"
    shorter, longer, which = (a, b, "second") if len(a) < len(b) else (b, a, "first")
    return f"position {len(shorter)}: only the {which} has {longer[len(shorter)]} (lengths {len(a)} and {len(b)})"


# -- total order -----------------------------------------------------------------------------------


def check_total_order(cluster: Cluster) -> None:
    """Per (view, ordered shard), members deliver the same sequence (one a prefix of the other).

    Within a member's log the versions (vid, seq) strictly increase, and each delivery carries
    the view the member had installed when it delivered.
    """
    for key, shard in _shards(cluster):
        if shard.mode is DeliveryMode.ORDERED:
            _check_prefixes(cluster, key, shard)
        for node in shard.members:
            last = (-1, -1)
            for d in cluster.members[node].delivered.get(key, []):
                if d.vid != d.at_vid:
                    _fail(
                        cluster,
                        f"node {node} delivered {_ident(d)} in shard {key} tagged view {d.vid} "
                        f"while it had installed view {d.at_vid}",
                    )
                if shard.mode is DeliveryMode.ORDERED:
                    if (d.vid, d.seq) <= last:
                        _fail(
                            cluster,
                            f"seqs not strictly increasing in shard {key}: node {node} delivered "
                            f"(vid {d.vid}, seq {d.seq}) after (vid {last[0]}, seq {last[1]})",
                        )
                    last = (d.vid, d.seq)


def _check_prefixes(cluster: Cluster, key: ShardKey, shard: ShardLayout) -> None:
    """Members that delivered in a view of an ordered shard agree: one sequence is a prefix of the other."""
    views: dict[int, dict[int, list[tuple[int, int, int]]]] = {}
    for node in shard.members:
        for vid, log in sorted(_by_view(cluster.members[node].delivered.get(key, [])).items()):
            views.setdefault(vid, {})[node] = [(d.seq, d.sender, d.msg_no) for d in log]
    for vid, logs in sorted(views.items()):
        longest = max(logs.values(), key=len)
        for node, log in sorted(logs.items()):
            if log != longest[: len(log)]:
                at = next(i for i, (a, b) in enumerate(zip(log, longest, strict=False)) if a != b)
                _fail(
                    cluster,
                    f"total order broken in shard {key}: node {node} delivered {log[at]} "
                    f"at position {at} of view {vid}, another member delivered {longest[at]}",
                )


# -- integrity ------------------------------------------------------------------------------------


def check_integrity(cluster: Cluster) -> None:
    """Nothing delivered twice, nothing invented (same payload as sent), FIFO per sender across views.

    FIFO is strict: a member delivers each sender's messages as 0, 1, 2, ... with no gap (a
    view change trims a suffix of a crashed sender's messages and a live sender re-sends the
    rest, so a gap is always a loss or a reordering).
    """
    for key, shard in _shards(cluster):
        sent = {n: cluster.members[n].submitted.get(key, []) for n in shard.members}
        sent_sets = {n: set(nos) for n, nos in sent.items()}
        for node in shard.members:
            member = cluster.members[node]
            seen: set[tuple[int, int]] = set()
            last: dict[int, int] = {}
            for d in member.delivered.get(key, []):
                ident = _ident(d)
                if ident in seen:
                    _fail(cluster, f"node {node} delivered {ident} twice in {key} (again in view {d.vid})")
                seen.add(ident)
                if d.msg_no not in sent_sets.get(d.sender, ()):
                    _fail(cluster, f"node {node} delivered {ident}, which nobody sent")
                payload = cluster.members[d.sender].payloads.get(key, {}).get(d.msg_no)
                if payload is not None and payload != d.payload:
                    _fail(
                        cluster,
                        f"node {node} delivered {ident} in {key} with a payload of {len(d.payload)} bytes "
                        f"that differs from the {len(payload)} bytes sent",
                    )
                expected = last.get(d.sender, -1) + 1
                if d.msg_no != expected:
                    _fail(
                        cluster,
                        f"node {node} broke FIFO for sender {d.sender} in {key}: delivered msg_no {d.msg_no} "
                        f"in view {d.vid} where {expected} comes next",
                    )
                last[d.sender] = d.msg_no
            receipts = member.stable_raw.get(key, [])
            if len(set(receipts)) != len(receipts) or not set(receipts) <= sent_sets.get(node, set()):
                _fail(cluster, f"node {node} got raw receipts twice or for messages it never sent in {key}")


# -- virtual synchrony --------------------------------------------------------------------------


def _agreed_views(cluster: Cluster) -> dict[int, View]:
    """vid -> the view installed under it (the first view, then the first installer's record)."""
    views: dict[int, View] = {cluster.view.vid: cluster.view}
    for _, member in sorted(cluster.members.items()):
        for rec in member.views:
            if rec.view is not None:
                views.setdefault(rec.vid, rec.view)
    return views


def _shard_members(view: View | None, key: ShardKey, fallback: ShardLayout) -> tuple[int, ...]:
    if view is None:
        return fallback.members
    try:
        return view.shard(key).members
    except IndexError:
        return ()


def check_virtual_synchrony(cluster: Cluster) -> None:
    """Members that both installed view v+1 from v delivered exactly the same messages in v.

    Per ordered shard they share in view v, the same sequence. Raw shards are not virtually
    synchronous and are not checked here: they deliver on receipt with no ragged trim (a
    sender delivers its own message when it sends it, a crashed sender's last messages may
    reach only some survivors). For them check_liveness proves that every live sender's
    messages arrive exactly once everywhere, and check_integrity FIFO without gaps.
    """
    views = _agreed_views(cluster)
    moved: dict[int, list[int]] = {}
    for node, member in sorted(cluster.members.items()):
        for rec in member.views:
            moved.setdefault(rec.previous_vid, []).append(node)
    for vid, nodes in sorted(moved.items()):
        for key, first_layout in _shards(cluster):
            in_shard = [n for n in nodes if n in _shard_members(views.get(vid), key, first_layout)]
            if first_layout.mode is not DeliveryMode.ORDERED or len(in_shard) < 2:
                continue
            logs = {
                n: [_ident(d) for d in _by_view(cluster.members[n].delivered.get(key, [])).get(vid, [])]
                for n in in_shard
            }
            base_node = in_shard[0]
            base = logs[base_node]
            for node in in_shard[1:]:
                log = logs[node]
                if log != base:
                    _fail(
                        cluster,
                        f"virtual synchrony broken in shard {key}: nodes {base_node} and {node} both installed "
                        f"view {vid + 1} from view {vid} but delivered different messages in view {vid} "
                        f"({len(base)} vs {len(log)} messages; first difference at {_first_difference(base, log)})",
                    )


# -- views -----------------------------------------------------------------------------------------


def check_views(cluster: Cluster) -> None:
    """Installed views agree, chain by one, shrink only by suspected members, keep a majority.

    - agreement: every member that installed view v installed the same member list (and layout);
    - each member's views go 0 -> 1 -> 2 ... and list it; `failed` is what left;
    - only members someone suspected (or that went down) ever leave a view;
    - majority: each view has more than half of the members of the previous one, not counting
      members that left on purpose (GroupCore.leave), as in Derecho's rule.
    """
    suspected_by_anyone = {n for m in cluster.members.values() for n, _ in m.suspected}
    agreed: dict[int, tuple[int, tuple[int, ...], object]] = {}
    for node, member in sorted(cluster.members.items()):
        previous = member.first_view or cluster.view
        for rec in member.views:
            if rec.previous_vid != previous.vid or rec.vid != previous.vid + 1:
                _fail(
                    cluster,
                    f"node {node} installed view {rec.vid} from view {rec.previous_vid}, "
                    f"but it was in view {previous.vid}",
                )
            if node not in rec.members:
                _fail(cluster, f"node {node} installed view {rec.vid} {list(rec.members)}, which does not list it")
            first = agreed.setdefault(rec.vid, (node, rec.members, rec.view.subgroups if rec.view else None))
            layout = rec.view.subgroups if rec.view else None
            if first[1] != rec.members or (first[2] is not None and layout is not None and first[2] != layout):
                _fail(
                    cluster,
                    f"views disagree: node {first[0]} installed view {rec.vid} as {list(first[1])}, "
                    f"node {node} as {list(rec.members)}"
                    + ("" if first[1] != rec.members else " (same members, different shard layout)"),
                )
            added = [n for n in rec.members if n not in previous.members]
            uninvited = [n for n in added if n not in cluster.join_requests]
            if uninvited:
                _fail(
                    cluster,
                    f"node {node}: view {rec.vid} {list(rec.members)} adds {uninvited} to view {previous.vid} "
                    f"{list(previous.members)}, which never asked to join",
                )
            if list(rec.members[: len(rec.members) - len(added)]) != [n for n in previous.members if n in rec.members]:
                _fail(cluster, f"node {node}: view {rec.vid} {list(rec.members)} does not rank survivors first")
            gone = [n for n in previous.members if n not in rec.members]
            if sorted(rec.failed) != sorted(gone):
                _fail(
                    cluster,
                    f"node {node}: view {rec.vid} reports failed {list(rec.failed)} but {gone} left view "
                    f"{previous.vid}",
                )
            blameless = [n for n in gone if n not in suspected_by_anyone and cluster.members[n].alive]
            if blameless:
                _fail(
                    cluster,
                    f"view {rec.vid} (installed by node {node}) removed {blameless}, which nobody suspected "
                    f"and which never went down",
                )
            departed = [n for n in gone if cluster.members[n].left_at is not None]
            if 2 * (len(rec.members) - len(added)) <= len(previous.members) - len(departed):
                _fail(
                    cluster,
                    f"majority lost: node {node} installed view {rec.vid} {list(rec.members)} with "
                    f"{len(rec.members)} of the {len(previous.members)} members of view {previous.vid}"
                    + (f" ({departed} left on purpose)" if departed else ""),
                )
            previous = rec.view if rec.view is not None else View(rec.vid, rec.members, previous.subgroups)


def check_trim_durable(cluster: Cluster) -> None:
    """The ragged trim is on disk at every survivor before anyone applies it (DESIGN.md section 4).

    When a member installs view v+1 from v, every member of its ordered shards that is in
    v+1 and that no failure detector had suspected by then has finished persisting
    (persisted(token) called) a ragged trim of view v for that shard, and the latest such
    trim has the same value everywhere. (A member already suspected, or that left, is failed:
    it is removed in the next view and need not log the trim, as in Derecho.)
    """
    first_suspected: dict[int, int] = {}
    for member in cluster.members.values():
        for n, step in member.suspected:
            first_suspected[n] = min(step, first_suspected.get(n, step))
        if member.left_at is not None:
            first_suspected[member.node] = min(member.left_at, first_suspected.get(member.node, member.left_at))
    for node, member in sorted(cluster.members.items()):
        previous = member.first_view or cluster.view
        for rec in member.views:
            for key in previous.shards_of(node):
                layout = previous.shard(key)
                if layout.mode is not DeliveryMode.ORDERED:
                    continue
                values = {}
                for other in layout.members:
                    if other not in rec.members or first_suspected.get(other, rec.step + 1) <= rec.step:
                        continue
                    done = [
                        p
                        for p in cluster.members[other].persists
                        if p.what == "ragged_trim"
                        and p.vid == previous.vid
                        and (p.record.get("subgroup"), p.record.get("shard")) == key
                        and 0 <= p.completed <= rec.step
                    ]
                    if not done:
                        _fail(
                            cluster,
                            f"node {node} installed view {rec.vid} at step {rec.step} before node {other} had "
                            f"persisted the ragged trim of view {previous.vid} for shard {key}",
                        )
                    values[other] = max(done, key=lambda p: p.completed).record.get("trim")
                if len(set(values.values())) > 1:
                    _fail(
                        cluster,
                        f"ragged trims of view {previous.vid} shard {key} on disk differ when node {node} "
                        f"installed view {rec.vid}: {values}",
                    )
            previous = rec.view if rec.view is not None else View(rec.vid, rec.members, previous.subgroups)


def check_halts(cluster: Cluster) -> None:
    """A member halts only for a reason the run gave it.

    With crashes of a minority, no survivor may halt: it keeps the majority and nobody suspects
    it. A member that was asked to leave halts with "left the group". A falsely suspected member
    is removed and halts; what that does to others' majority is the protocol's call, so false
    suspicion runs accept any halt.
    """
    if cluster.scenario.false_suspicions:
        return
    for node, member in sorted(cluster.members.items()):
        if node in cluster.minority:
            # Cut off with a minority: if it noticed (or was noticed) before the heal, it stops.
            if member.halts and member.halts[-1].reason not in ("lost majority", "removed from the view"):
                _fail(cluster, f"node {node}, cut off with a minority, halted with {member.halts[-1].reason!r}")
            continue
        for halt in member.halts:
            if member.left_at is not None and halt.reason == "left the group":
                continue
            _fail(
                cluster,
                f"node {node} halted at step {halt.step} ({halt.reason}, {halt.detail}) though only "
                f"a minority crashed and nobody suspected it",
            )


# -- liveness ------------------------------------------------------------------------------------


def check_liveness(cluster: Cluster) -> None:
    """Exactly-once outcome, once faults stop.

    Every message that a live member submitted is delivered exactly once at every live member
    of its shard; live members of a shard end with the same history; they all end in the same
    view, which lists exactly the live members; raw senders that saw no fault get every receipt.
    """
    everyone = _live(cluster, sorted(cluster.members))
    never = sorted(set(cluster.join_requests) - set(cluster.members))
    if never and everyone:
        _fail(cluster, f"nodes {never} asked to join but were never admitted")
    finals = {n: _final_view(cluster.members[n], cluster.members[n].first_view or cluster.view) for n in everyone}
    for node in everyone:
        vid, members = finals[node]
        if sorted(members) != everyone:
            _fail(
                cluster,
                f"node {node} ends in view {vid} {list(members)}, but the live members are {everyone}"
                + (f" (down: {_down(cluster)})" if len(everyone) < len(cluster.members) else ""),
            )
        if vid != finals[everyone[0]][0]:
            _fail(
                cluster,
                f"live nodes {everyone[0]} and {node} end in different views {finals[everyone[0]][0]} and {vid}",
            )
    for key, shard in _shards(cluster):
        live = _live(cluster, shard.members)
        expected = {(n, no) for n in _live(cluster, shard.members) for no in cluster.members[n].submitted.get(key, [])}
        for node in live:
            counts: dict[tuple[int, int], int] = {}
            for d in cluster.members[node].delivered.get(key, []):
                counts[_ident(d)] = counts.get(_ident(d), 0) + 1
            missing = sorted(expected - counts.keys())
            if missing:
                _fail(
                    cluster,
                    f"node {node} in shard {key} is missing {len(missing)} messages, e.g. {missing[:5]}",
                )
            repeated = sorted(i for i in expected if counts.get(i, 0) > 1)
            if repeated:
                _fail(cluster, f"node {node} in shard {key} delivered {repeated[:5]} more than once")
        if len(live) > 1:
            # Ordered: the same history, crashed senders' messages included. Raw: the same per
            # live sender (a crashed raw sender's last messages may reach only some members).
            ordered = shard.mode is DeliveryMode.ORDERED
            live_senders = set(live)
            histories = {}
            for node in live:
                log = cluster.members[node].delivered.get(key, [])
                if ordered:
                    histories[node] = [(d.vid, *_ident(d)) for d in log]
                else:
                    histories[node] = _per_sender([d for d in log if d.sender in live_senders])
            base = live[0]
            for node in live[1:]:
                if histories[node] != histories[base]:
                    detail = (
                        _first_difference(histories[base], histories[node])
                        if ordered
                        else f"{histories[base]} vs {histories[node]}"
                    )
                    _fail(
                        cluster,
                        f"live nodes {base} and {node} end with different histories in shard {key} "
                        f"(first difference at {detail})",
                    )
        if shard.mode is DeliveryMode.RAW:
            for node in _live(cluster, shard.senders):
                member = cluster.members[node]
                if member.views and cluster.scenario.faulty:
                    continue  # receipts across a view change: the check above proves the deliveries
                if sorted(member.stable_raw.get(key, [])) != sorted(member.submitted.get(key, [])):
                    _fail(cluster, f"node {node} lacks raw receipts in {key}")


def _final_view(member: Member, first: View) -> tuple[int, tuple[int, ...]]:
    if member.views:
        return member.views[-1].vid, member.views[-1].members
    return first.vid, first.members


def _down(cluster: Cluster) -> str:
    return ", ".join(f"{n}: {m.fault}" for n, m in sorted(cluster.members.items()) if not m.alive)


def check_all(cluster: Cluster) -> None:
    check_views(cluster)
    check_integrity(cluster)
    check_total_order(cluster)
    check_virtual_synchrony(cluster)
    check_trim_durable(cluster)
    check_halts(cluster)
    check_liveness(cluster)
