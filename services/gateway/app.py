"""The gateway's HTTP surface: NanoMDM-compatible push API, webhook and raw check-in ingestion.

Every endpoint answers 4xx with a JSON `{"error": reason}` for bad input, and 200/202 only after
Kafka acknowledged what it produced, so a success means nothing can be lost.
"""

from __future__ import annotations

import base64
import hmac
import logging
import uuid
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.serde import AvroSerde
from services.gateway.checkin_parse import BadCheckin, checkin_event, parse_plist
from services.gateway.producer import AsyncProducer
from services.gateway.settings import GatewaySettings
from services.gateway.webhook import event_to_checkin, verify_signature
from services.sdk.publisher import PushRequest

log = logging.getLogger(__name__)

REQUESTS = Counter("mdmpush_gateway_requests_total", "HTTP requests by route and status",
                   ["route", "status"])

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings", GatewaySettings)
PRODUCER: web.AppKey[AsyncProducer] = web.AppKey("producer", AsyncProducer)
SERDE: web.AppKey[AvroSerde] = web.AppKey("serde", AvroSerde)
TOPICS: web.AppKey[Topics] = web.AppKey("topics", Topics)
CLOCK: web.AppKey[Clock] = web.AppKey("clock", Clock)


def _error(route: str, status: int, reason: str) -> web.Response:
    REQUESTS.labels(route, str(status)).inc()
    return web.json_response({"error": reason}, status=status)


def _ok(route: str, body: dict[str, Any], status: int = 200) -> web.Response:
    REQUESTS.labels(route, str(status)).inc()
    return web.json_response(body, status=status)


async def _publish_checkin(app: web.Application, record: dict[str, Any]) -> None:
    topic = app[TOPICS].checkins
    value = app[SERDE].encode("CheckinEvent", record, topic)
    await app[PRODUCER].send(topic, value, record["enrollment_id"])


async def webhook(request: web.Request) -> web.Response:
    """POST /webhook: a NanoMDM/MicroMDM webhook event -> mdm.checkin.events.v1."""
    app, settings = request.app, request.app[SETTINGS]
    body = await request.read()
    if settings.webhook_secret is not None and not verify_signature(
        body, request.headers.get("X-Hmac-Signature"),
        settings.webhook_secret.get_secret_value().encode(),
    ):
        return _error("webhook", 401, "missing or invalid X-Hmac-Signature")
    tenant = request.query.get("tenant", settings.default_tenant)
    try:
        record = event_to_checkin(body, app[CLOCK].now_ms(), tenant)
    except BadCheckin as exc:
        return _error("webhook", 400, str(exc))
    await _publish_checkin(app, record)
    return _ok("webhook", {"event_id": record["event_id"], "enrollment_id":
                           record["enrollment_id"], "message_type": record["message_type"]})


async def checkin(request: web.Request) -> web.Response:
    """PUT/POST /checkin: a raw check-in or command-report plist, as a device sends it."""
    app, settings = request.app, request.app[SETTINGS]
    try:
        message = parse_plist(await request.read())
        record = checkin_event(message, app[CLOCK].now_ms(),
                               request.query.get("tenant", settings.default_tenant),
                               source="checkin")
    except BadCheckin as exc:
        return _error("checkin", 400, str(exc))
    await _publish_checkin(app, record)
    return _ok("checkin", {"event_id": record["event_id"], "enrollment_id":
                           record["enrollment_id"], "message_type": record["message_type"]})


async def push(request: web.Request) -> web.Response:
    """GET/POST/PUT /v1/push/{id,id,...}: NanoMDM's push API, queued as one NotificationRequest.

    NanoMDM answers with per-id push results; we queue, so each id's result is the request id
    (follow it with `mdmpush device`). Query: tenant, initiator (user|admin, default user: the
    push API is what a person's action calls), command_type.
    """
    app, settings = request.app, request.app[SETTINGS]
    if settings.api_key is not None and not _authorised(request, settings):
        return _error("push", 401, "HTTP basic auth with the API key required")
    ids = [i for i in request.match_info["ids"].split(",") if i]
    if not ids:
        return _error("push", 400, "no enrollment ids in the path")
    if len(ids) > 10_000:
        return _error("push", 413, "at most 10000 ids per call; use the SDK for more")
    initiator = request.query.get("initiator", "user")
    if initiator not in ("user", "admin"):
        return _error("push", 400, f"initiator must be user or admin, not {initiator!r}")
    push_request = PushRequest(
        tenant=request.query.get("tenant", settings.default_tenant), enrollment_ids=ids,
        initiator="user" if initiator == "user" else "admin",
        command_type=request.query.get("command_type", ""), source="push-api",
        request_id=str(uuid.uuid4()),
    )
    topic = app[TOPICS].requests
    value = app[SERDE].encode("NotificationRequest",
                              push_request.to_record(app[CLOCK].now_ms()), topic)
    await app[PRODUCER].send(topic, value, push_request.tenant)
    status = {i: {"push_result": push_request.request_id} for i in ids}
    return _ok("push", {"status": status, "request_id": push_request.request_id}, 202)


def _authorised(request: web.Request, settings: GatewaySettings) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic ") or settings.api_key is None:
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return user == "nanomdm" and hmac.compare_digest(
        password, settings.api_key.get_secret_value())


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def metrics(_request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes, wrong methods and oversized bodies answer JSON with a reason too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"error": exc.reason}, status=exc.status)


def create_app(
    settings: GatewaySettings, producer: AsyncProducer, topics: Topics, serde: AvroSerde,
    clock: Clock,
) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors])
    app[SETTINGS], app[PRODUCER], app[TOPICS], app[SERDE], app[CLOCK] = (
        settings, producer, topics, serde, clock)
    app.router.add_post("/webhook", webhook)
    app.router.add_route("POST", "/checkin", checkin)
    app.router.add_route("PUT", "/checkin", checkin)
    for method in ("GET", "POST", "PUT"):
        app.router.add_route(method, "/v1/push/{ids}", push)
    app.router.add_get("/healthz", health)
    app.router.add_get("/metrics", metrics)
    return app


