"""The gateway's OpenAPI 3.1 description: served at /openapi.json, checked in as docs/openapi.json.

Built from the same limits the handlers enforce (services/common/limits.py), so the description
and the behaviour cannot drift apart silently; `python -m services.gateway.openapi` rewrites the
checked-in copy, and a test fails when it is stale. It is served without authentication: it holds
no secrets, and a client (or a fuzzer) needs it before it has credentials.
"""

from __future__ import annotations

import base64
import json
import plistlib
import sys
from functools import cache
from pathlib import Path
from typing import Any

from services.common.limits import (
    COMMAND_TYPE_RE,
    ENROLLMENT_ID_RE,
    MAX_ENROLLMENT_ID_LEN,
    MAX_JSON_DEPTH,
    MAX_TENANT_LEN,
    TENANT_RE,
)

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"

#: A device's TokenUpdate as a client would forward it (synthetic values, nothing real).
EXAMPLE_TOKEN_UPDATE = plistlib.dumps({
    "MessageType": "TokenUpdate", "UDID": "00008030-EXAMPLE0UDID0001",
    "Topic": "com.apple.mgmt.External.00000000-0000-4000-8000-000000000000",
    "Token": bytes(range(32)), "PushMagic": "00000000-EXAMPLE-PUSH-MAGIC",
}).decode()
EXAMPLE_WEBHOOK_EVENT = {
    "topic": "mdm.TokenUpdate", "event_id": "example-event-1",
    "checkin_event": {"udid": "00008030-EXAMPLE0UDID0001",
                      "raw_payload": base64.b64encode(EXAMPLE_TOKEN_UPDATE.encode()).decode()},
}

_ID = ENROLLMENT_ID_RE.pattern


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Invalid input (the reason says which field and why)",
        401: "No valid credential",
        403: "The credential's principal may not act for the tenant named",
        413: "Body or target list too large",
        429: "Rate limit of the principal exceeded",
        503: "Kafka did not acknowledge the record; retry",
    }
    out: dict[str, Any] = {}
    for status in statuses:
        headers = None
        if status == 429:
            headers = {"Retry-After": {"description": "Seconds to wait",
                                       "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
        if status == 503:
            headers = {"Retry-After": {"schema": {"type": "string"}}}
        out[str(status)] = _json(_ref("Error"), reasons[status], headers)
    out["default"] = _json(_ref("Error"), "Any other refusal (unknown route, wrong method)")
    return out


_TENANT = {
    "name": "tenant", "in": "query", "required": False,
    "description": "Only for a principal serving several tenants (an operator): the tenant it "
                   "acts for. Any other principal acts for its own tenant; naming another is 403.",
    "schema": {"type": "string", "maxLength": MAX_TENANT_LEN, "pattern": f"^{TENANT_RE.pattern}$"},
}

_PUSH_QUERY = [
    _TENANT,
    {"name": "initiator", "in": "query", "required": False,
     "description": "user: priority lane (default); admin: bulk lane",
     "schema": {"type": "string", "enum": ["user", "admin"]}},
    {"name": "command_type", "in": "query", "required": False,
     "description": "Informational (install_app, wipe, ...), carried to jobs and outcomes",
     "schema": {"type": "string", "pattern": f"^{COMMAND_TYPE_RE.pattern}$"}},
]

_PUSH_RESPONSES = {
    "202": _json(_ref("PushQueued"), "Queued: one NotificationRequest, acknowledged by Kafka",
                 {"X-Mdmpush-Follow": {"schema": {"type": "string"},
                                       "description": "mdmpush follow <request_id> --since <ms>"}}),
    **_errors(400, 401, 403, 413, 429, 503),
}


def _push_operation(method: str) -> dict[str, Any]:
    return {
        "operationId": f"push_{method}",
        "summary": "NanoMDM push API: wake the listed enrollments",
        "description": "Comma-separated enrollment ids (NanoCMD's FossMDM sends up to 30 per "
                       f"call); each at most {MAX_ENROLLMENT_ID_LEN} characters. Answers once "
                       "the request is durable; follow it with `mdmpush device`.",
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": "ids", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": f"^{_ID}(,{_ID})*$"}},
            *_PUSH_QUERY,
        ],
        "responses": _PUSH_RESPONSES,
    }


@cache
def openapi_description() -> dict[str, Any]:
    checkin_responses = {
        "200": _json(_ref("CheckinAccepted"), "Published to mdm.checkin.events.v1"),
        **_errors(400, 401, 403, 413, 429, 503),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mdmpush gateway",
            "version": "1",
            "description": (
                "HTTP in front of Kafka: NanoMDM/MicroMDM webhook and raw check-ins in, "
                "NanoMDM- and MicroMDM-compatible push API. Every operation but the health "
                "checks and this description is authenticated, and the credential decides the "
                "tenant. Every error is JSON {\"error\": reason}. Metrics, liveness and "
                "readiness are on a separate ops port (/metrics, /livez, /readyz)."),
        },
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "basic",
                           "description": "Password: an API key of the principal. The user "
                                          "name is not checked (clients send nanomdm or "
                                          "micromdm)."},
                "webhookHmac": {"type": "apiKey", "in": "header", "name": "X-Hmac-Signature",
                                "description": "base64(HMAC-SHA256(webhook secret, body)), as "
                                               "NanoMDM signs; the secret decides the tenant."},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"}}},
                "CheckinAccepted": {
                    "type": "object", "required": ["event_id", "enrollment_id", "message_type"],
                    "properties": {"event_id": {"type": "string"},
                                   "enrollment_id": {"type": "string"},
                                   "message_type": {"type": "string", "enum": [
                                       "AUTHENTICATE", "TOKEN_UPDATE", "CHECK_OUT",
                                       "COMMAND_REPORT", "OTHER"]}}},
                "PushQueued": {
                    "type": "object",
                    "required": ["status", "request_id", "requested_at", "follow"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "requested_at": {"type": "integer",
                                         "description": "Epoch ms of the NotificationRequest"},
                        "follow": {"type": "string",
                                   "description": "The command that follows the request's "
                                                  "outcomes (also in X-Mdmpush-Follow)"},
                        "status": {"type": "object", "additionalProperties": {
                            "type": "object", "required": ["push_result"],
                            "properties": {"push_result": {"type": "string"}}}}}},
                "MicroMdmPushQueued": {
                    "type": "object", "required": ["status", "id"],
                    "properties": {"status": {"const": "queued"}, "id": {"type": "string"}}},
                "Health": {"type": "object", "required": ["ok"],
                           "properties": {"ok": {"type": "boolean"}}},
                "WebhookEvent": {
                    "type": "object",
                    "description": "NanoMDM's webhook event: the device's plist, base64, in "
                                   "checkin_event.raw_payload or acknowledge_event.raw_payload. "
                                   f"Nested at most {MAX_JSON_DEPTH} deep.",
                    "properties": {
                        "topic": {"type": "string"},
                        "event_id": {"type": "string"},
                        "checkin_event": _ref("WebhookInner"),
                        "acknowledge_event": _ref("WebhookInner")}},
                "WebhookInner": {
                    "type": "object",
                    "properties": {"raw_payload": {"type": "string", "contentEncoding": "base64"},
                                   "udid": {"type": "string"},
                                   "enrollment_id": {"type": "string"}}},
            },
        },
        "paths": {
            "/webhook": {"post": {
                "operationId": "webhook",
                "summary": "NanoMDM/MicroMDM webhook event -> check-in event",
                "security": [{"webhookHmac": []}],
                "parameters": [_TENANT],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("WebhookEvent"),
                                         "example": EXAMPLE_WEBHOOK_EVENT}}},
                "responses": checkin_responses,
            }},
            "/checkin": {
                method: {
                    "operationId": f"checkin_{method}",
                    "summary": "A raw check-in or command-report plist (XML or binary)",
                    "security": [{"apiKey": []}],
                    "parameters": [_TENANT],
                    "requestBody": {"required": True, "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"},
                            "example": EXAMPLE_TOKEN_UPDATE}}},
                    "responses": checkin_responses,
                } for method in ("put", "post")
            },
            "/v1/push/{ids}": {m: _push_operation(m) for m in ("get", "post", "put")},
            "/push/{udid}": {"get": {
                "operationId": "micromdm_push",
                "summary": "MicroMDM push API: wake one enrollment",
                "security": [{"apiKey": []}],
                "parameters": [
                    {"name": "udid", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": f"^{_ID}$"}},
                    *_PUSH_QUERY,
                ],
                "responses": {
                    "202": _json(_ref("MicroMdmPushQueued"), "Queued, acknowledged by Kafka"),
                    **_errors(400, 401, 403, 413, 429, 503),
                },
            }},
            "/healthz": {"get": {
                "operationId": "healthz", "summary": "The process answers", "security": [],
                "responses": {"200": _json(_ref("Health"), "Alive")}}},
            "/readyz": {"get": {
                "operationId": "readyz", "summary": "Started and not shutting down",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "Ready"),
                              "503": _json(_ref("Health"), "Not ready")}}},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This description", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}}}},
        },
    }


def rendered() -> str:
    return json.dumps(openapi_description(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    CHECKED_IN.write_text(rendered())
    sys.stdout.write(f"wrote {CHECKED_IN}\n")
