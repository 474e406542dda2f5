"""The ops port: metrics, liveness and readiness, kept off the public listener.

The public port faces MDM servers (and, through an ingress, possibly the internet); metrics tell
an attacker request rates per route and status, so they are served only here (default 9100).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


@dataclass
class Readiness:
    """Ready from the end of start-up until shutdown begins (then the load balancer drains)."""

    ready: bool = False

    async def handle(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": self.ready}, status=200 if self.ready else 503)


async def live(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_ops_app(readiness: Readiness) -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", live)
    app.router.add_get("/readyz", readiness.handle)
    return app
