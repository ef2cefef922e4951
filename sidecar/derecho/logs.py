"""Logging set-up: one line per event, text for people or JSON for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("node", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


class TraceContextFilter(logging.Filter):
    """Stamps the current span's trace and span ids on records logged inside a span."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    node: int | None = None,
    modules: dict[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """One handler on the root logger (stderr by default); `modules` sets levels per logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(TraceContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"member {node} " if node is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, module_level in (modules or {}).items():
        logging.getLogger(name).setLevel(module_level.upper())
    if node is not None:
        factory = logging.getLogRecordFactory()

        def with_node(*args: object, **kwargs: object) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            record.node = node
            return record

        logging.setLogRecordFactory(with_node)
