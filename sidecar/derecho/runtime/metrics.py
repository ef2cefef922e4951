"""Prometheus metrics of one sidecar, in a registry of its own.

Counters move once per batch, never per message, so the message path stays cheap; frontier
and queue gauges are read from the core only when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..core.actions import ShardKey

if TYPE_CHECKING:
    from .sidecar import Sidecar


def shard_label(key: ShardKey) -> str:
    return f"{key[0]}/{key[1]}"


class SidecarMetrics:
    def __init__(self, sidecar: Sidecar) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages_sent = Counter(
            "derecho_messages_sent", "Messages this member multicast, per shard", ["shard"], registry=r
        )
        self.bytes_sent = Counter("derecho_bytes_sent", "Payload bytes this member multicast", ["shard"], registry=r)
        self.messages_delivered = Counter(
            "derecho_messages_delivered", "Messages delivered at this member, per shard", ["shard"], registry=r
        )
        self.bytes_delivered = Counter(
            "derecho_bytes_delivered", "Payload bytes delivered at this member", ["shard"], registry=r
        )
        self.delivery_latency = Histogram(
            "derecho_delivery_latency_seconds",
            "From a local application's send to its delivery (first message of each batch)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.slow_consumers = Counter(
            "derecho_slow_consumers_disconnected", "Applications cut off for falling behind", registry=r
        )
        self.clients_disconnected = Counter("derecho_client_disconnects", "Application disconnects", registry=r)
        self.peer_protocol_errors = Counter(
            "derecho_peer_protocol_errors", "Peer links dropped for protocol errors", registry=r
        )
        self.view_changes = Counter(
            "derecho_view_changes", "Views installed after the first, by reason", ["reason"], registry=r
        )
        self.suspicions = Counter("derecho_suspicions", "Members this member suspected of failure", registry=r)
        r.register(_StateCollector(sidecar))

    def sent(self, key: ShardKey, count: int, nbytes: int) -> None:
        label = shard_label(key)
        self.messages_sent.labels(label).inc(count)
        self.bytes_sent.labels(label).inc(nbytes)

    def delivered(self, key: ShardKey, count: int, nbytes: int) -> None:
        label = shard_label(key)
        self.messages_delivered.labels(label).inc(count)
        self.bytes_delivered.labels(label).inc(nbytes)


class _StateCollector(Collector):
    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.sidecar
        yield GaugeMetricFamily(
            "derecho_ready", "1 when the member serves writes", value=1 if s.status()["ready"] else 0
        )
        yield GaugeMetricFamily("derecho_view_id", "Installed view id", value=s.view.vid)
        yield GaugeMetricFamily("derecho_connected_clients", "Connected applications", value=len(s.clients.sessions))
        yield GaugeMetricFamily("derecho_connected_peers", "Connected peer links", value=len(s.mesh.links))
        frontier = GaugeMetricFamily(
            "derecho_frontier", "Per-shard frontiers (sequence counts)", labels=["shard", "frontier"]
        )
        lag = GaugeMetricFamily("derecho_received_minus_delivered", "Received but not yet delivered", labels=["shard"])
        queue = GaugeMetricFamily("derecho_queue_depth", "Own messages waiting or in flight", labels=["shard", "queue"])
        for key, shard in s.core.shards.items():
            label = shard_label(key)
            f = shard.frontiers()
            for name in ("sent", "received", "delivered", "stable"):
                if name in f:
                    frontier.add_metric([label, name], f[name])
            if "delivered" in f:
                lag.add_metric([label], f["received"] - f["delivered"])
            queue.add_metric([label, "pending"], f["pending"])
            queue.add_metric([label, "inflight"], f["inflight"])
        yield frontier
        yield lag
        yield queue
