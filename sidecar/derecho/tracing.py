"""OpenTelemetry tracing: one trace follows a message send -> multicast -> receive -> deliver.

The trace context travels in the frame headers (`x`: message position -> W3C carrier), only
for messages that are traced; untraced messages carry nothing and cost nothing. Attributes
follow the OpenTelemetry messaging conventions, with `messaging.system = derecho` and the
destination `group/subgroup/shard`. Batched deliveries get one span with a link per message.

Configuration is the standard one: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER(_ARG), and for the
sidecar OTEL_TRACES_EXPORTER = none (default) | console | otlp, with OTEL_EXPORTER_OTLP_* for
the OTLP exporter (`pip install 'derecho[otlp]'`). Applications configure their own provider;
the client library traces when one is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

SYSTEM = "derecho"
Carrier = dict[str, str]


class TracingConfigError(ValueError):
    pass


def provider_is_set() -> bool:
    """Whether an SDK (or other real) tracer provider is installed; otherwise tracing is off."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def setup_sidecar_tracing(node_id: int, group: str) -> bool:
    """Install a tracer provider from the OTEL_* environment; returns whether tracing is on."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if exporter_name in ("", "none"):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if exporter_name == "console":
        exporter: Any = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise TracingConfigError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'derecho[otlp]'"
            ) from None
        exporter = OTLPSpanExporter()
    else:
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={exporter_name!r} is not supported; use none, console or otlp")
    attributes = {"derecho.node_id": node_id, "derecho.group": group}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"derecho-sidecar-{node_id}"  # type: ignore[assignment]
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def destination(group: str, key: tuple[int, int]) -> str:
    return f"{group}/{key[0]}/{key[1]}"


def _attributes(dest: str, operation: str, kind: str, **extra: Any) -> dict[str, Any]:
    attrs = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        "messaging.destination.name": dest,
    }
    attrs.update({k: v for k, v in extra.items() if v is not None})
    return attrs


class Tracer:
    """The spans derecho records, on one side (client or sidecar)."""

    def __init__(self, name: str) -> None:
        self.tracer = trace.get_tracer(name)

    def start_send(self, dest: str, size: int, client_id: str) -> tuple[Span, Carrier] | None:
        """The application's producer span; None when the sampler drops it (send no context)."""
        span = self.tracer.start_span(
            f"send {dest}",
            kind=SpanKind.PRODUCER,
            attributes=_attributes(
                dest,
                "send",
                "send",
                **{
                    "messaging.message.body.size": size,
                    "messaging.client.id": client_id,
                },
            ),
        )
        if not span.is_recording():
            span.end()
            return None
        carrier: Carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    def start_multicast(self, dest: str, parent: Carrier, size: int, node: int, msg_no: int) -> tuple[Span, Carrier]:
        """The sender sidecar's span, from accepting the message until it is delivered."""
        span = self.tracer.start_span(
            f"publish {dest}",
            context=propagate.extract(parent),
            kind=SpanKind.PRODUCER,
            attributes=_attributes(
                dest,
                "publish",
                "publish",
                **{
                    "messaging.message.body.size": size,
                    "messaging.message.id": f"{node}:{msg_no}",
                },
            ),
        )
        carrier: Carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier

    def record_receive(self, dest: str, carriers: Iterable[tuple[Carrier, int, int]], node: int) -> None:
        """A receiving sidecar got traced messages from a peer: one span per message."""
        for carrier, sender, msg_no in carriers:
            self.tracer.start_span(
                f"receive {dest}",
                context=propagate.extract(carrier),
                kind=SpanKind.CONSUMER,
                attributes=_attributes(
                    dest,
                    "receive",
                    "receive",
                    **{
                        "messaging.message.id": f"{sender}:{msg_no}",
                        "derecho.node_id": node,
                    },
                ),
            ).end()

    def record_deliver(self, dest: str, carriers: list[Carrier], batch_size: int, where: str) -> None:
        """A batch was delivered (stable, in order); links join it to each traced message."""
        links = [Link(trace.get_current_span(propagate.extract(c)).get_span_context()) for c in carriers]
        self.tracer.start_span(
            f"deliver {dest}",
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=_attributes(
                dest,
                "deliver",
                "process",
                **{
                    "messaging.batch.message_count": batch_size,
                    "derecho.delivered_at": where,
                },
            ),
        ).end()


def record_view_change(tracer: Tracer, group: str, vid: int, members: list[int], failed: list[int], node: int) -> None:
    """A view change, as a span of its own at each member that installs the view."""
    tracer.tracer.start_span(
        f"view change {group}",
        kind=SpanKind.INTERNAL,
        attributes={
            "messaging.system": SYSTEM,
            "derecho.view.id": vid,
            "derecho.view.members": members,
            "derecho.view.failed": failed,
            "derecho.node_id": node,
        },
    ).end()


def end_ok(span: Span, **attributes: Any) -> None:
    for key, value in attributes.items():
        span.set_attribute(key, value)
    span.end()


def end_error(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))
    span.end()
