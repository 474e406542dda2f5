"""Turn what a device sends an MDM server (check-in or command-report plists) into CheckinEvents.

Pure functions: no Kafka, no HTTP. Secrets the device sends (UnlockToken, BootstrapToken,
Challenge) are never copied into an event: Kafka must hold no secrets.
"""

from __future__ import annotations

import plistlib
import uuid
from typing import Any

from services.common.errors import MdmPushError

MESSAGE_TYPES = {
    "Authenticate": "AUTHENTICATE",
    "TokenUpdate": "TOKEN_UPDATE",
    "CheckOut": "CHECK_OUT",
}


class BadCheckin(MdmPushError):
    """The body is not a check-in or command report we can read; `str()` says why."""


def parse_plist(body: bytes) -> dict[str, Any]:
    """XML or binary plist -> dict, or BadCheckin."""
    try:
        parsed = plistlib.loads(body)
    except (plistlib.InvalidFileException, ValueError, TypeError, OverflowError) as exc:
        raise BadCheckin(f"not a property list: {exc}") from exc
    except Exception as exc:  # expat raises its own error types on malformed XML
        raise BadCheckin(f"not a property list: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parsed, dict):
        raise BadCheckin("property list is not a dictionary")
    return parsed


def enrollment_id_of(message: dict[str, Any]) -> str:
    """NanoMDM's enrollment id: UDID (or EnrollmentID), plus ':UserID' for a user channel."""
    device = message.get("UDID") or message.get("EnrollmentID")
    if not isinstance(device, str) or not device:
        raise BadCheckin("no UDID or EnrollmentID in the message")
    user = message.get("UserID") or message.get("EnrollmentUserID")
    return f"{device}:{user}" if isinstance(user, str) and user else device


def checkin_event(
    message: dict[str, Any],
    occurred_at_ms: int,
    tenant: str = "",
    source: str = "webhook",
    enrollment_id: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A CheckinEvent record from a parsed check-in (MessageType) or command report (Status)."""
    raw_type = message.get("MessageType")
    status = message.get("Status")
    if isinstance(raw_type, str) and raw_type:
        message_type = MESSAGE_TYPES.get(raw_type, "OTHER")
    elif isinstance(status, str) and status:
        message_type, raw_type = "COMMAND_REPORT", status
    else:
        raise BadCheckin("neither MessageType (check-in) nor Status (command report) present")
    token = message.get("Token")
    if token is not None and not isinstance(token, bytes):
        raise BadCheckin("Token is not binary data")
    if message_type == "TOKEN_UPDATE" and (not token or not message.get("Topic")):
        raise BadCheckin("TokenUpdate without Token or Topic")
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "enrollment_id": enrollment_id or enrollment_id_of(message),
        "tenant": tenant,
        "message_type": message_type,
        "raw_message_type": raw_type,
        "udid": _str_or_none(message.get("UDID")),
        "topic": _str_or_none(message.get("Topic")),
        "token_hex": token.hex() if token else None,
        "push_magic": _str_or_none(message.get("PushMagic")),
        "command_uuid": _str_or_none(message.get("CommandUUID")),
        "status": _str_or_none(status),
        "occurred_at": occurred_at_ms,
        "source": source,
    }


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
