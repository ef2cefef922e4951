"""HTTP endpoints: /healthz (the process serves), /readyz (the member serves writes),
/status (JSON), /metrics (Prometheus text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from ..runtime.sidecar import Sidecar


def make_app(sidecar: Sidecar) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        status = sidecar.status()
        if status["ready"]:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: waiting for {status['waiting_for']}\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(sidecar.status())

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(sidecar.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def start_http(sidecar: Sidecar, address: str) -> tuple[web.AppRunner, str]:
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(make_app(sidecar), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    sockets = site._server.sockets if site._server else []  # the bound port, when 0 was asked for
    bound = sockets[0].getsockname()[1] if sockets else int(port)
    return runner, f"{host}:{bound}"
