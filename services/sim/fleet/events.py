"""CheckinEvent records as the gateway would build them from a real device's messages.

Same field choices as ``services.gateway.checkin_parse.checkin_event`` (Authenticate and CheckOut
carry the topic, TokenUpdate the full trifecta, an Idle command report has status ``Idle``), so a
consumer cannot tell a simulated device from a real one except by ``source="sim"``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["Enrollment", "authenticate", "check_out", "idle_report", "token_update"]

SOURCE = "sim"


@dataclass(frozen=True, slots=True)
class Enrollment:
    """One enrollment record as the MDM server knows it: id, tenant and the push trifecta."""

    enrollment_id: str
    tenant: str
    udid: str
    topic: str
    token_hex: str
    push_magic: str


def _event(
    enrollment: Enrollment,
    at_ms: int,
    message_type: str,
    raw_type: str,
    *,
    topic: str | None = None,
    token_hex: str | None = None,
    push_magic: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "enrollment_id": enrollment.enrollment_id,
        "tenant": enrollment.tenant,
        "message_type": message_type,
        "raw_message_type": raw_type,
        "udid": enrollment.udid,
        "topic": topic,
        "token_hex": token_hex,
        "push_magic": push_magic,
        "command_uuid": None,
        "status": status,
        "occurred_at": at_ms,
        "source": SOURCE,
    }


def authenticate(enrollment: Enrollment, at_ms: int) -> dict[str, Any]:
    """First message of an enrollment (no token yet)."""
    return _event(enrollment, at_ms, "AUTHENTICATE", "Authenticate", topic=enrollment.topic)


def token_update(enrollment: Enrollment, at_ms: int) -> dict[str, Any]:
    """The push trifecta the server must use from now on."""
    return _event(
        enrollment,
        at_ms,
        "TOKEN_UPDATE",
        "TokenUpdate",
        topic=enrollment.topic,
        token_hex=enrollment.token_hex,
        push_magic=enrollment.push_magic,
    )


def check_out(enrollment: Enrollment, at_ms: int) -> dict[str, Any]:
    """The device's one attempt to say it unenrolled."""
    return _event(enrollment, at_ms, "CHECK_OUT", "CheckOut", topic=enrollment.topic)


def idle_report(enrollment: Enrollment, at_ms: int) -> dict[str, Any]:
    """The command poll after a push: the proof of arrival the correlator waits for."""
    return _event(enrollment, at_ms, "COMMAND_REPORT", "Idle", status="Idle")
