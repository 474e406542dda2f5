"""The NanoMDM / MicroMDM webhook: verify its signature and turn each event into a CheckinEvent.

Its signature is checked by services/common/principals.py (the secret decides the tenant).
The event JSON (NanoMDM's `service/webhook/event.json`) carries the device's raw plist body in
`checkin_event.raw_payload` or `acknowledge_event.raw_payload` (base64), and NanoMDM's enrollment
id in `ids.id`; we parse the plist ourselves so every field the device sent is available.

The parser defends itself rather than trusting the gateway's door checks: nesting is measured
before `json.loads` (which recurses), and the ids taken from the JSON pass the same limits as
everything else (services/common/limits.py), so whatever it returns can be published.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from services.common.limits import (
    InvalidInput,
    check_enrollment_id,
    check_json_depth,
    check_short_text,
)
from services.gateway.checkin_parse import BadCheckin, checkin_event, parse_plist


def event_to_checkin(body: bytes, received_at_ms: int, tenant: str) -> dict[str, Any]:
    """One webhook POST body -> one CheckinEvent record, or BadCheckin with the reason."""
    try:
        check_json_depth(body)
        event = json.loads(body)
    except InvalidInput as exc:
        raise BadCheckin(str(exc)) from exc
    except ValueError as exc:  # not JSON, not UTF-8, or an integer past Python's digit limit
        raise BadCheckin(f"body is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise BadCheckin("event is not a JSON object")
    inner = event.get("checkin_event") or event.get("acknowledge_event")
    if not isinstance(inner, dict):
        raise BadCheckin("event has neither checkin_event nor acknowledge_event")
    raw = inner.get("raw_payload")
    if not isinstance(raw, str) or not raw:
        raise BadCheckin("event has no raw_payload")
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadCheckin(f"raw_payload is not base64: {exc}") from exc
    message = parse_plist(payload)
    ids = inner.get("ids")
    enrollment_id = (
        (ids.get("id") if isinstance(ids, dict) else None)
        or inner.get("enrollment_id")
        or inner.get("udid")
    )
    event_id = event.get("event_id")
    try:
        return checkin_event(
            message,
            received_at_ms,
            tenant=tenant,
            source="webhook",
            enrollment_id=(check_enrollment_id(enrollment_id)
                           if isinstance(enrollment_id, str) and enrollment_id else None),
            event_id=(check_short_text("event_id", event_id)
                      if isinstance(event_id, str) and event_id else None),
        )
    except InvalidInput as exc:
        raise BadCheckin(str(exc)) from exc
