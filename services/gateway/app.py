"""The gateway's HTTP surface: NanoMDM/MicroMDM-compatible push API, webhook and raw check-ins.

Every request but the health checks and the API description is authenticated, and the
credential decides the tenant (services/common/principals.py). Every answer is JSON: 4xx with
`{"error": reason}` for bad input, 200/202 only after Kafka acknowledged what was produced (so a
success means nothing can be lost), 500 without internals for a bug (logged).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka import DeliveryError
from services.common.limits import (
    InvalidInput,
    check_checkin_event,
    check_command_type,
    check_json_depth,
    check_targets,
)
from services.common.principals import NotAllowed, Principal
from services.common.serde import AvroSerde
from services.gateway.auth import Authenticator, RateLimiter, Unauthenticated
from services.gateway.checkin_parse import BadCheckin, checkin_event, parse_plist
from services.gateway.openapi import openapi_description
from services.gateway.producer import AsyncProducer
from services.gateway.settings import GatewaySettings
from services.gateway.webhook import event_to_checkin
from services.sdk.publisher import PushRequest

log = logging.getLogger(__name__)
#: One line per request (principal, route, status, request/event id, refusal reason), so an
#: operator can follow a push from the HTTP call. Paths are logged as route templates: the ids
#: in them are in the request's record, and nothing secret is ever in a path or a reason.
access_log = logging.getLogger("services.gateway.access")

REQUESTS = Counter("mdmpush_gateway_requests_total", "HTTP requests by route and status",
                   ["route", "status"])

#: NanoCMD's FossMDM sends 30 ids per call; MicroMDM's /push takes one. More ids than this
#: belong in the SDK (one request can target the whole tenant); the request line is bounded too.
MAX_PUSH_IDS = 1_000
MAX_REQUEST_LINE = 64 * 1024

SETTINGS: web.AppKey[GatewaySettings] = web.AppKey("settings", GatewaySettings)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
LIMITER: web.AppKey[RateLimiter] = web.AppKey("limiter", RateLimiter)
PRODUCER: web.AppKey[AsyncProducer] = web.AppKey("producer", AsyncProducer)
SERDE: web.AppKey[AvroSerde] = web.AppKey("serde", AvroSerde)
TOPICS: web.AppKey[Topics] = web.AppKey("topics", Topics)
CLOCK: web.AppKey[Clock] = web.AppKey("clock", Clock)
#: What the access line reports about a request, set by the handlers as they learn it.
PRINCIPAL_NAME: web.RequestKey[str] = web.RequestKey("principal", str)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
EVENT_ID: web.RequestKey[str] = web.RequestKey("event_id", str)


class Refused(Exception):
    """Answer `status` with `{"error": reason}` (raised by handlers, answered by middleware)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers or {}


def _admit(request: web.Request, principal: Principal) -> str:
    """Rate-limit the principal, then the tenant it acts for (?tenant=, operators only)."""
    request[PRINCIPAL_NAME] = principal.name
    wait = request.app[LIMITER].retry_after(principal.name)
    if wait:
        raise Refused(429, f"rate limit of principal {principal.name} exceeded",
                      {"Retry-After": str(wait)})
    try:
        return request.app[AUTH].tenant(principal, request.query.get("tenant"))
    except NotAllowed as exc:
        raise Refused(403, str(exc)) from None
    except InvalidInput as exc:
        raise Refused(400, str(exc)) from None


def _api_principal(request: web.Request) -> Principal:
    try:
        return request.app[AUTH].api_key(request.headers.get("Authorization"))
    except Unauthenticated as exc:
        raise Refused(401, str(exc), {"WWW-Authenticate": 'Basic realm="mdmpush"'}) from None


async def _publish_checkin(request: web.Request, record: dict[str, Any]) -> web.Response:
    try:
        check_checkin_event(record)
    except InvalidInput as exc:
        raise Refused(400, str(exc)) from None
    app = request.app
    topic = app[TOPICS].checkins
    value = app[SERDE].encode("CheckinEvent", record, topic)
    await app[PRODUCER].send(topic, value, record["enrollment_id"])
    request[EVENT_ID] = record["event_id"]
    return web.json_response({"event_id": record["event_id"], "enrollment_id":
                              record["enrollment_id"], "message_type": record["message_type"]})


async def webhook(request: web.Request) -> web.Response:
    """POST /webhook: a NanoMDM/MicroMDM webhook event -> mdm.checkin.events.v1."""
    app = request.app
    body = await request.read()
    try:
        principal = app[AUTH].webhook(body, request.headers.get("X-Hmac-Signature"))
    except Unauthenticated as exc:
        raise Refused(401, str(exc)) from None
    tenant = _admit(request, principal)
    try:
        check_json_depth(body)
        record = event_to_checkin(body, app[CLOCK].now_ms(), tenant)
    except (BadCheckin, InvalidInput) as exc:
        raise Refused(400, str(exc)) from None
    record["principal"] = principal.name
    return await _publish_checkin(request, record)


async def checkin(request: web.Request) -> web.Response:
    """PUT/POST /checkin: a raw check-in or command-report plist, as a device sends it."""
    principal = _api_principal(request)
    tenant = _admit(request, principal)
    app = request.app
    try:
        record = checkin_event(parse_plist(await request.read()), app[CLOCK].now_ms(), tenant,
                               source="checkin")
    except BadCheckin as exc:
        raise Refused(400, str(exc)) from None
    record["principal"] = principal.name
    return await _publish_checkin(request, record)


async def _queue_push(request: web.Request, ids: list[str]) -> tuple[PushRequest, int]:
    """Authenticate, validate and publish one NotificationRequest for `ids`; returns it and
    its requested_at (epoch ms), from which `mdmpush follow` reads the outcomes."""
    principal = _api_principal(request)
    tenant = _admit(request, principal)
    if len(ids) > MAX_PUSH_IDS:
        raise Refused(413, f"at most {MAX_PUSH_IDS} ids per call; use the SDK for more")
    initiator = request.query.get("initiator", "user")
    if initiator not in ("user", "admin"):
        raise Refused(400, f"initiator must be user or admin, not {initiator!r}")
    try:
        command_type = check_command_type(request.query.get("command_type", ""))
        targets = check_targets(ids, MAX_PUSH_IDS)
    except InvalidInput as exc:
        raise Refused(400, str(exc)) from None
    push_request = PushRequest(
        tenant=tenant, enrollment_ids=targets,
        initiator="user" if initiator == "user" else "admin",
        command_type=command_type, source="push-api", request_id=str(uuid.uuid4()),
    )
    app = request.app
    topic = app[TOPICS].requests
    record = push_request.to_record(app[CLOCK].now_ms())
    record["principal"] = principal.name
    value = app[SERDE].encode("NotificationRequest", record, topic)
    await app[PRODUCER].send(topic, value, push_request.tenant)
    request[REQUEST_ID] = push_request.request_id
    return push_request, record["requested_at"]


async def push(request: web.Request) -> web.Response:
    """GET/POST/PUT /v1/push/{id,id,...}: NanoMDM's push API, queued as one NotificationRequest.

    NanoMDM answers with per-id push results; we queue, so each id's result is the request id
    (follow it with `mdmpush device`). Query: tenant (operators), initiator (user|admin, default
    user: the push API is what a person's action calls), command_type.
    """
    queued, requested_at = await _queue_push(request, request.match_info["ids"].split(","))
    status = {i: {"push_result": queued.request_id} for i in queued.enrollment_ids}
    follow = f"mdmpush follow {queued.request_id} --since {requested_at}"
    return web.json_response(
        {"status": status, "request_id": queued.request_id, "requested_at": requested_at,
         "follow": follow}, status=202, headers={"X-Mdmpush-Follow": follow})


async def micromdm_push(request: web.Request) -> web.Response:
    """GET /push/{udid}: MicroMDM's push API (one id), as NanoCMD calls it with user micromdm."""
    queued, _ = await _queue_push(request, [request.match_info["udid"]])
    return web.json_response({"status": "queued", "id": queued.request_id}, status=202)


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def openapi(_request: web.Request) -> web.Response:
    return web.json_response(openapi_description())


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer is JSON, every status is counted; no plain-text error page ever leaks."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    reason: str | None = None
    try:
        response = await handler(request)
    except Refused as exc:
        reason = exc.reason
        response = web.json_response({"error": reason}, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = str(exc.reason)
        if exc.status == 413:
            reason = f"body over {request.app[SETTINGS].max_body_bytes} bytes"
        response = web.json_response({"error": reason}, status=exc.status)
    except DeliveryError:
        log.exception("Kafka did not acknowledge a record (route %s)", route)
        reason = "Kafka did not acknowledge the record; retry"
        response = web.json_response({"error": reason}, status=503, headers={"Retry-After": "1"})
    except Exception:
        log.exception("unexpected error on route %s", route)
        reason = "internal error"
        response = web.json_response({"error": reason}, status=500)
    REQUESTS.labels(route, str(response.status)).inc()
    access_log.info("%s %s -> %d", request.method, route, response.status, extra={
        "route": route, "status": response.status, "principal": request.get(PRINCIPAL_NAME),
        "request_id": request.get(REQUEST_ID), "event_id": request.get(EVENT_ID),
        "reason": reason if response.status >= 400 else None})
    return response


def create_app(
    settings: GatewaySettings, producer: AsyncProducer, topics: Topics, serde: AvroSerde,
    clock: Clock, auth: Authenticator,
) -> web.Application:
    """The public application (the ops port is `ops.create_ops_app`)."""
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[json_errors])
    app[SETTINGS], app[PRODUCER], app[TOPICS], app[SERDE], app[CLOCK], app[AUTH] = (
        settings, producer, topics, serde, clock, auth)
    app[LIMITER] = RateLimiter(settings.rate_per_s, settings.rate_burst)
    app.router.add_post("/webhook", webhook)
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/checkin", checkin)
    for method in ("GET", "POST", "PUT"):
        app.router.add_route(method, "/v1/push/{ids}", push)
    app.router.add_get("/push/{udid}", micromdm_push)
    app.router.add_get("/healthz", health)
    app.router.add_get("/openapi.json", openapi)
    return app
