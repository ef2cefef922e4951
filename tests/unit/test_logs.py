"""Structured logs: one JSON object per line, trace ids inside spans, levels per module."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from derecho.logs import setup_logging


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    factory = logging.getLogRecordFactory()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield stream
    logging.setLogRecordFactory(factory)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("derecho.test.noisy").setLevel(logging.NOTSET)


def test_json_lines_carry_node_and_trace_ids(captured: io.StringIO) -> None:
    setup_logging("info", "json", node=4, modules={"derecho.test.noisy": "error"}, stream=captured)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("derecho.test").info("inside %s", "a span")
    logging.getLogger("derecho.test").warning("outside")
    logging.getLogger("derecho.test.noisy").warning("filtered by its module level")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["inside a span", "outside"]
    inside, outside = lines
    assert inside["node"] == 4 and inside["level"] == "info" and inside["logger"] == "derecho.test"
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in outside


def test_text_format_is_one_line_per_event(captured: io.StringIO) -> None:
    setup_logging("warning", "text", node=1, stream=captured)
    logging.getLogger("derecho.test").info("hidden below the level")
    logging.getLogger("derecho.test").error("shown")
    out = captured.getvalue().splitlines()
    assert len(out) == 1 and "member 1 ERROR derecho.test: shown" in out[0]
