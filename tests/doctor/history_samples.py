"""A realistic push history for one enrollment, as the sender, fan-out and correlator write it."""

from __future__ import annotations

from typing import Any

from tests.support.samples import NOW, SAMPLES

MIN = 60_000
ENROLLMENT = "UDID-1"


def outcome(job: str, state: str, at: int, **fields: Any) -> dict[str, Any]:
    base = {**SAMPLES["PushOutcome"], "job_id": job, "request_id": job.split("/")[0],
            "state": state, "at": at, "status": None, "reason": None, "apns_id": None,
            "apns_timestamp": None, "latency_ms": None}
    return {**base, **fields}


def alert(job: str, diagnosis: str, pushed_at: int, **fields: Any) -> dict[str, Any]:
    base = {**SAMPLES["UnansweredPush"], "job_id": job, "request_id": job.split("/")[0],
            "diagnosis": diagnosis, "pushed_at": pushed_at, "deadline_at": pushed_at + 5 * MIN,
            "flagged_at": pushed_at + 5 * MIN, "evidence": {}, "action": ""}
    return {**base, **fields}


def failing_history() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An old failure, an answered push, then the failures Apple should hear about."""
    outcomes = [
        outcome("r0/UDID-1", "FAILED", NOW - 60 * MIN, status=400, reason="BadDeviceToken",
                apns_id="id-0"),
        outcome("r1/UDID-1", "SENT", NOW, status=200, apns_id="id-1"),
        outcome("r1/UDID-1", "ANSWERED", NOW + 2000, latency_ms=2000.0),
        outcome("r2/UDID-1", "SENT", NOW + 10 * MIN, status=200, apns_id="id-2"),
        outcome("r2/UDID-1", "UNANSWERED", NOW + 15 * MIN),
        outcome("r3/UDID-1", "RETRYING", NOW + 20 * MIN, status=503,
                reason="ServiceUnavailable", apns_id="id-3"),
        outcome("r3/UDID-1", "FAILED", NOW + 21 * MIN, attempt=1, status=410,
                reason="Unregistered", apns_id="id-3b", push_magic="magic-2"),
    ]
    alerts = [alert("r2/UDID-1", "STALE_PUSH_MAGIC", NOW + 10 * MIN, apns_id="id-2",
                    evidence={"duplicate_enrollment": "UDID-1-old"})]
    return outcomes, alerts
