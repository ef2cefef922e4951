"""Each member's HTTP endpoints, scraped from outside like a load balancer or Prometheus would."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import DEADLINE, Everyone, Groups, http_address, wait_for_condition

from derecho.localgroup import LocalGroup, LocalMember


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE)) as session:
        yield session


async def get(http: aiohttp.ClientSession, member: LocalMember, path: str) -> tuple[int, str]:
    async with http.get(f"http://{await http_address(member)}{path}") as response:
        return response.status, await response.text()


async def metrics(http: aiohttp.ClientSession, member: LocalMember) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, by (sample name, sorted labels); checks the families' types."""
    status, text = await get(http, member, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    types = {family.name: family.type for family in families}
    assert types["derecho_messages_delivered"] == "counter"
    assert types["derecho_ready"] == "gauge"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def delivered(samples: dict[tuple[str, tuple], float], name: str = "derecho_messages_delivered_total") -> float:
    return samples.get((name, (("shard", "0/0"),)), 0.0)


async def test_health_ready_and_status_at_every_member(groups: Groups, shared_group: LocalGroup, http):
    for member in shared_group.members:
        assert await get(http, member, "/healthz") == (200, "ok\n")
        assert await get(http, member, "/readyz") == (200, "ready\n")
        status, body = await get(http, member, "/status")
        assert status == 200
        doc = json.loads(body)
        assert doc["node_id"] == member.node_id
        assert doc["group"] == "local"
        assert doc["ready"] is True
        assert (doc["view"]["vid"], doc["view"]["members"]) == (0, [0, 1, 2])
        assert set(doc["shards"]) == {"0/0"}
        assert {"sent", "received", "delivered", "stable"} <= set(doc["shards"]["0/0"])
        assert doc["peers"] == {str(n): "connected" for n in range(3) if n != member.node_id}
        assert doc["http"] == await http_address(member)
        assert doc["pid"] == member.process.pid
        # The same document an app gets over the socket.
        client = await groups.connect(member)
        over_socket = await client.status()
        assert {k: v for k, v in over_socket.items() if k not in ("uptime_s", "clients", "shards")} == {
            k: v for k, v in doc.items() if k not in ("uptime_s", "clients", "shards")
        }
        assert (await get(http, member, "/no-such-page"))[0] == 404


async def test_metrics_parse_and_count_deliveries(groups: Groups, shared_group: LocalGroup, http):
    group = shared_group
    before = [await metrics(http, m) for m in group.members]
    for samples in before:
        assert samples[("derecho_ready", ())] == 1
        assert samples[("derecho_view_id", ())] == 0
        assert samples[("derecho_connected_peers", ())] == 2
    everyone = await Everyone.join(groups, group)
    payloads = [b"m" * k for k in range(1, 41)]
    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(*(everyone.clients[1].send(p) for p in payloads))
        for stream in everyone.streams:  # delivered at every member
            got = [(await anext(stream)).payload for _ in payloads]
            assert sorted(got) == sorted(payloads)
    after = [await metrics(http, m) for m in group.members]
    for member, old, new in zip(group.members, before, after, strict=True):
        assert delivered(new) - delivered(old) == len(payloads), f"member {member.node_id}"
        grown = delivered(new, "derecho_bytes_delivered_total") - delivered(old, "derecho_bytes_delivered_total")
        assert grown == sum(map(len, payloads))
        sent = delivered(new, "derecho_messages_sent_total") - delivered(old, "derecho_messages_sent_total")
        assert sent == (len(payloads) if member.node_id == 1 else 0)
        assert new[("derecho_connected_clients", ())] >= 1


async def test_readyz_says_not_ready_until_every_member_is_connected(groups: Groups, http):
    group = groups.create(2)
    group.write_configs()
    first, second = group.members
    group.spawn(first)
    address = await http_address(first)  # serving HTTP and its socket, without its peer
    status, text = await get(http, first, "/readyz")
    assert status == 503
    assert "waiting for connections to members [1]" in text
    assert (await get(http, first, "/healthz"))[0] == 200
    assert json.loads((await get(http, first, "/status"))[1])["ready"] is False
    assert (await metrics(http, first))[("derecho_ready", ())] == 0
    group.spawn(second)
    await group.wait_ready(DEADLINE)

    async def ready() -> bool:
        async with http.get(f"http://{address}/readyz") as response:
            return response.status == 200

    await wait_for_condition(ready, "member 0's /readyz to turn 200 once member 1 is connected")
    assert (await metrics(http, first))[("derecho_ready", ())] == 1
