"""Invariant checks over a finished simulation (DESIGN.md section 3)."""

from __future__ import annotations

from ..core.view import DeliveryMode
from .cluster import Cluster


class InvariantViolation(AssertionError):
    pass


def check_total_order(cluster: Cluster) -> None:
    """Members of a shard deliver the same sequence (one a prefix of the other), same seqs."""
    for key, shard in _shards(cluster):
        if shard.mode is not DeliveryMode.ORDERED:
            continue
        logs = {
            n: [(d.seq, d.sender, d.msg_no) for d in cluster.members[n].delivered.get(key, [])] for n in shard.members
        }
        longest = max(logs.values(), key=len)
        for node, log in logs.items():
            if log != longest[: len(log)]:
                at = next(i for i, (a, b) in enumerate(zip(log, longest, strict=False)) if a != b)
                raise InvariantViolation(
                    f"seed {cluster.seed}: total order broken in shard {key}: node {node} delivered {log[at]} "
                    f"at position {at}, another member delivered {longest[at]}"
                )
        for log in logs.values():
            seqs = [s for s, _, _ in log]
            if seqs != sorted(set(seqs)):
                raise InvariantViolation(f"seed {cluster.seed}: seqs not strictly increasing in shard {key}")


def check_integrity(cluster: Cluster) -> None:
    """Nothing delivered twice, nothing invented, FIFO per sender."""
    for key, shard in _shards(cluster):
        sent = {n: set(cluster.members[n].submitted.get(key, [])) for n in shard.members}
        for node in shard.members:
            seen: set[tuple[int, int]] = set()
            last: dict[int, int] = {}
            for d in cluster.members[node].delivered.get(key, []):
                ident = (d.sender, d.msg_no)
                if ident in seen:
                    raise InvariantViolation(f"seed {cluster.seed}: node {node} delivered {ident} twice in {key}")
                seen.add(ident)
                if d.msg_no not in sent.get(d.sender, set()):
                    raise InvariantViolation(f"seed {cluster.seed}: node {node} delivered {ident}, which nobody sent")
                if d.msg_no <= last.get(d.sender, -1):
                    raise InvariantViolation(f"seed {cluster.seed}: node {node} broke FIFO for sender {d.sender}")
                last[d.sender] = d.msg_no


def check_liveness(cluster: Cluster) -> None:
    """With no failures, every message sent in a shard is delivered by every member of it."""
    for key, shard in _shards(cluster):
        expected = {(n, no) for n in shard.members for no in cluster.members[n].submitted.get(key, [])}
        for node in shard.members:
            got = {(d.sender, d.msg_no) for d in cluster.members[node].delivered.get(key, [])}
            if got != expected:
                missing = sorted(expected - got)[:5]
                raise InvariantViolation(
                    f"seed {cluster.seed}: node {node} in shard {key} is missing {len(expected - got)} messages, "
                    f"e.g. {missing}"
                )
        if shard.mode is DeliveryMode.RAW:
            for node in shard.senders:
                member = cluster.members[node]
                if sorted(member.stable_raw.get(key, [])) != sorted(member.submitted.get(key, [])):
                    raise InvariantViolation(f"seed {cluster.seed}: node {node} lacks raw receipts in {key}")


def check_all(cluster: Cluster) -> None:
    check_integrity(cluster)
    check_total_order(cluster)
    check_liveness(cluster)


def _shards(cluster: Cluster):
    for sg, shards in enumerate(cluster.view.subgroups):
        for sh, shard in enumerate(shards):
            yield (sg, sh), shard
