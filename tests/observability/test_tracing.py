"""One app send produces one trace across the whole group (issue: observability).

The sidecars export over real OTLP/HTTP to a collector this test runs on 127.0.0.1; the
application side (this process) records into an in-memory exporter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from derecho.client import Client
from derecho.localgroup import LocalGroup
from derecho.wire import frames
from derecho.wire.types import T

pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter", reason="needs derecho[otlp]")


class Collector:
    """A minimal OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "service": service,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                            "kind": span.kind,
                            "attrs": {a.key: a.value for a in span.attributes},
                        }
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    sink = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", sink.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield sink, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
def app_spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The global provider can be set once per process; later tests reuse the exporter.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
        app_spans.exporter = exporter  # type: ignore[attr-defined]
    exporter = app_spans.exporter  # type: ignore[attr-defined]
    exporter.clear()
    return exporter


def otlp_env(endpoint: str) -> dict[str, str]:
    """Sidecars export their spans over OTLP/HTTP to the test's collector, quickly."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


async def wait_for(condition, what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_one_send_is_one_trace_across_the_group(tmp_path: Path, collector, app_spans) -> None:
    sink, endpoint = collector
    env = otlp_env(endpoint)
    group = LocalGroup(tmp_path, 3, group="traced", env=env, log_level="warning")
    await group.start()
    try:
        clients = [await Client.connect(m.socket) for m in group.members]
        streams = [c.deliveries() for c in clients]
        tracer = trace.get_tracer("test-app")
        with tracer.start_as_current_span("app request") as root:
            receipt = await clients[0].send(b"traced hello")
        trace_id = format(root.get_span_context().trace_id, "032x")
        for stream in streams:
            delivery = await asyncio.wait_for(stream.__anext__(), 10)
            assert delivery.version == receipt.version
            assert delivery.trace and "traceparent" in delivery.trace
        for c in clients:
            await c.close()

        def sidecar_spans(name: str) -> list[dict]:
            return [s for s in sink.spans if s["name"] == name and s["trace_id"] == trace_id]

        await wait_for(
            lambda: (
                len(sidecar_spans("publish traced/0/0")) == 1
                and len(sidecar_spans("receive traced/0/0")) == 2
                and len([s for s in sink.spans if s["name"] == "deliver traced/0/0"]) >= 3
            ),
            "sidecar spans at the collector",
        )
    finally:
        await group.stop()

    local = app_spans.get_finished_spans()
    send = [s for s in local if s.name == "send traced/0/0"]
    assert len(send) == 1, [s.name for s in local]
    send_span = send[0]
    assert format(send_span.context.trace_id, "032x") == trace_id
    assert send_span.parent is not None and send_span.parent.span_id == root.get_span_context().span_id
    assert send_span.attributes["messaging.system"] == "derecho"
    assert send_span.attributes["messaging.destination.name"] == "traced/0/0"
    assert send_span.attributes["messaging.message.id"] == str(receipt.version)

    publish = sidecar_spans("publish traced/0/0")[0]
    assert publish["service"] == "derecho-member-0"
    assert publish["parent"] == format(send_span.context.span_id, "016x")
    receives = sidecar_spans("receive traced/0/0")
    assert {r["service"] for r in receives} == {"derecho-member-1", "derecho-member-2"}
    assert all(r["parent"] == publish["span_id"] for r in receives)
    # Batched delivery: a deliver span at every member, linked (not parented) to the message.
    delivers = [
        s for s in sink.spans if s["name"] == "deliver traced/0/0" and (trace_id, publish["span_id"]) in s["links"]
    ]
    assert {d["service"] for d in delivers} == {"derecho-member-0", "derecho-member-1", "derecho-member-2"}
    # And one at every subscribed app (three clients in this process).
    app_delivers = [s for s in local if s.name == "deliver traced/0/0"]
    assert len(app_delivers) == 3
    for span in app_delivers:
        assert [format(link.context.span_id, "016x") for link in span.links] == [publish["span_id"]]
        assert span.attributes["messaging.batch.message_count"] == 1


async def test_no_trace_headers_when_tracing_is_off(tmp_path: Path) -> None:
    """No provider in the app and none in the sidecars: nothing traced, no `x` on the wire."""
    group = LocalGroup(tmp_path, 2, group="plain", log_level="warning")
    await group.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(group.members[1].socket))
        writer.write(frames.encode({"t": T.SUBSCRIBE, "r": 1, "sg": 0, "sh": 0}))
        _, sender_w = await asyncio.open_unix_connection(str(group.members[0].socket))
        sender_w.write(frames.encode({"t": T.SEND, "r": [7], "n": [5], "sg": 0, "sh": 0}, b"plain"))
        decoder = frames.FrameDecoder(1 << 20)
        headers: list[dict] = []
        while not any(h.get("t") == T.DELIVER for h in headers):
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "sidecar closed the connection"
            headers.extend(f.header for f in decoder.feed(data))
        deliver = next(h for h in headers if h.get("t") == T.DELIVER)
        assert "x" not in deliver
        writer.close()
        sender_w.close()
    finally:
        await group.stop()


async def test_a_view_change_is_a_span_at_every_survivor(tmp_path: Path, collector) -> None:
    sink, endpoint = collector
    env = otlp_env(endpoint)
    group = LocalGroup(tmp_path, 3, group="changing", env=env, log_level="warning")
    await group.start()
    try:
        group.members[2].process.kill()  # type: ignore[union-attr]
        group.members[2].process.wait()  # type: ignore[union-attr]

        def changes() -> list[dict]:
            return [s for s in sink.spans if s["name"] == "view change changing"]

        await wait_for(lambda: len(changes()) == 2, "view-change spans from both survivors")
    finally:
        await group.stop()
    spans = changes()
    assert {s["service"] for s in spans} == {"derecho-member-0", "derecho-member-1"}
    for span in spans:
        assert span["attrs"]["derecho.view.id"].int_value == 1
        assert [v.int_value for v in span["attrs"]["derecho.view.failed"].array_value.values] == [2]
