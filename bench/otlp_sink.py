"""A throwaway OTLP/HTTP trace receiver for benchmarks: accepts spans, counts them, drops them.

python bench/otlp_sink.py --port 4318     # prints the span count on SIGTERM
"""

from __future__ import annotations

import argparse
import signal
import sys

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    count = 0

    async def traces(request: web.Request) -> web.Response:
        nonlocal count
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        count += sum(len(s.spans) for rs in message.resource_spans for s in rs.scope_spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    def report(*_: object) -> None:
        print(f"spans received: {count}", flush=True)
        raise web.GracefulExit

    signal.signal(signal.SIGTERM, report)
    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handle_signals=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
