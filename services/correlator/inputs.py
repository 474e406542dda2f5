"""What the correlator accepts from its inputs, and how it reads times and counts out of range.

Anything with write access to the outcomes or check-ins topic can publish a record that decodes
but is wrong. Two kinds matter here:
- Too big to hold: a SENT outcome becomes a state entry whose texts are length-prefixed in 16
  bits (changelog.py), so a 100 KB enrollment id crashed the state write and, on restart, again
  (R-FUZZ-6). Ids and texts are checked with services/common/limits.py, as the fan-out checks
  its inputs, and a record outside them is dead-lettered with the reason.
- Out of range: a push stamped in the year 3000 would wait for a deadline a millennium away, a
  negative re-push count made it look like a re-push (never judged) (R-FUZZ-5); a check-in from
  the far future would answer every later push. Such a record is not lost: a time later than
  `now + future_tolerance_ms` is read as `now` (a push cannot be sent, nor a device heard from, in
  the future), a negative count as 0 (the sender clamps attempts the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common.limits import (
    MAX_ENROLLMENT_ID_LEN,
    MAX_PUSH_MAGIC_LEN,
    MAX_SHORT_TEXT_LEN,
    MAX_TOKEN_HEX_LEN,
    MAX_TOPIC_LEN,
    InvalidInput,
    check_enrollment_id,
    check_short_text,
    check_tenant,
)

#: A job id is `request/enrollment[#rN]`.
MAX_JOB_ID_LEN = MAX_SHORT_TEXT_LEN + 1 + MAX_ENROLLMENT_ID_LEN + 8
_TEXT_BOUNDS = (("job_id", MAX_JOB_ID_LEN), ("topic", MAX_TOPIC_LEN),
                ("token_hex", MAX_TOKEN_HEX_LEN), ("push_magic", MAX_PUSH_MAGIC_LEN),
                ("apns_id", MAX_SHORT_TEXT_LEN), ("rides_on", MAX_JOB_ID_LEN))


def check_outcome(record: Mapping[str, Any]) -> None:
    """A PushOutcome whose ids and texts fit the limits (raises InvalidInput)."""
    check_enrollment_id(record.get("enrollment_id"))
    check_short_text("request_id", record.get("request_id"))
    if record.get("tenant"):
        check_tenant(record["tenant"])
    for field, bound in _TEXT_BOUNDS:
        value = record.get(field)
        if value is not None and len(value) > bound:
            raise InvalidInput(field, f"{len(value)} characters, at most {bound} allowed")


def outcome_in_range(record: dict[str, Any], now: int, tolerance_ms: int) -> dict[str, Any]:
    """The outcome with a future `at` read as `now` and negative counts as 0 (a copy when
    anything changes)."""
    fixed: dict[str, Any] = {}
    if int(record["at"]) > now + tolerance_ms:
        fixed["at"] = now
    for count in ("repush", "attempt"):
        if (record.get(count) or 0) < 0:
            fixed[count] = 0
    return {**record, **fixed} if fixed else record


def checkin_in_range(event: dict[str, Any], now: int, tolerance_ms: int) -> dict[str, Any]:
    """The check-in with a future `occurred_at` read as `now` (a copy when it changes)."""
    if int(event["occurred_at"]) > now + tolerance_ms:
        return {**event, "occurred_at": now}
    return event
