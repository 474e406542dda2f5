"""The records the correlator writes, built from a pending push's unpacked `Entry`.

A verdict is an outcome of the original job (repush 0) even when a re-push got the answer:
accounting counts, per (request, enrollment), the outcomes with repush 0, and exactly one of
them is terminal. The re-push that helped is named in `reason`.
"""

from __future__ import annotations

from typing import Any

from services.correlator.diagnose import EnrollmentFacts, Finding
from services.correlator.pending import Entry, job_id

#: A re-arm is a re-push (`#r1`) of a request named after the silence it answers, so its
#: outcomes are evidence, never a verdict of any request (accounting counts first pushes only).
REARM_REPUSH = 1


def verdict(
    e: Entry, state: str, at: int, latency_ms: float | None, reason: str | None
) -> dict[str, Any]:
    """ANSWERED or UNANSWERED PushOutcome of the original job."""
    return {
        "job_id": e.job_id, "request_id": e.request_id, "tenant": e.tenant,
        "enrollment_id": e.enrollment_id, "state": state, "lane": e.lane, "attempt": 0,
        "repush": 0, "topic": e.topic, "token_hex": e.token_hex, "push_magic": e.push_magic,
        "token_updated_at": e.token_updated_at, "apns_id": e.apns_id, "status": None,
        "reason": reason, "apns_timestamp": None, "latency_ms": latency_ms, "at": at,
        # A rider's verdict names the job whose verdict it shares (contract: coalescing).
        "rides_on": None if e.rides_on is None else job_id(e.rides_on, e.enrollment_id),
    }


def alert(
    e: Entry, finding: Finding, action: str, deadline_at: int, flagged_at: int,
    last_contact_at: int | None,
) -> dict[str, Any]:
    return {
        "job_id": e.job_id, "request_id": e.request_id, "tenant": e.tenant,
        "enrollment_id": e.enrollment_id, "diagnosis": finding.diagnosis.value,
        "evidence": finding.evidence, "action": action, "topic": e.topic,
        "token_hex": e.token_hex, "push_magic": e.push_magic, "apns_id": e.apns_id,
        "pushed_at": e.pushed_at, "deadline_at": deadline_at, "flagged_at": flagged_at,
        "last_contact_at": last_contact_at,
    }


def push_job(
    e: Entry, repush: int, created_at: int, *, topic: str | None = None,
    token_hex: str | None = None, push_magic: str | None = None,
    token_updated_at: int | None = None,
) -> dict[str, Any]:
    """A correlator re-push of `e` (job id `#r<repush>`), on the priority lane.

    The trifecta defaults to the original push's; a stale-token re-push passes the new one.
    """
    return {
        "job_id": job_id(e.request_id, e.enrollment_id, repush), "request_id": e.request_id,
        "tenant": e.tenant, "enrollment_id": e.enrollment_id, "lane": "PRIORITY", "kind": "MDM",
        "topic": topic or e.topic, "token_hex": token_hex or e.token_hex,
        "push_magic": push_magic or e.push_magic, "aps_payload": None, "expiration": None,
        "command_type": "correlator_repush",
        "token_updated_at": token_updated_at or e.token_updated_at, "created_at": created_at,
        "attempt": 0, "repush": repush, "last_error": None,
    }


def rearm_job(enrollment_id: str, tenant: str, facts: EnrollmentFacts, silent_since: int,
              created_at: int) -> dict[str, Any]:
    """The one re-arm push of an enrollment silent since `silent_since`, on the bulk lane."""
    request_id = f"rearm-{silent_since}"
    return {
        "job_id": job_id(request_id, enrollment_id, REARM_REPUSH), "request_id": request_id,
        "tenant": tenant, "enrollment_id": enrollment_id, "lane": "BULK", "kind": "MDM",
        "topic": facts.topic, "token_hex": facts.token_hex, "push_magic": facts.push_magic,
        "aps_payload": None, "expiration": None, "command_type": "correlator_rearm",
        "token_updated_at": facts.token_updated_at, "created_at": created_at, "attempt": 0,
        "repush": REARM_REPUSH, "last_error": None,
    }


def activity(enrollment_id: str, tenant: str, state: str, last_contact_at: int | None,
             at: int, rearmed_at: int | None) -> dict[str, Any]:
    """An EnrollmentActivity record."""
    return {"tenant": tenant, "enrollment_id": enrollment_id, "state": state,
            "last_contact_at": last_contact_at or None, "at": at,
            "rearmed_at": rearmed_at or None}
