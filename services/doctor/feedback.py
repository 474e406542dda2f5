"""The feedback bundle Apple asks for (Apple seed, "Submitting feedback"): the push topic, token
and PushMagic used, the time and APNs answer of each failed push, and above all when the pushes
started failing — the first failed or unanswered push after the last answered one, not just a
recent one. Built from the history alone, so it can be exported long after the incident.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from services.doctor.history import DeviceHistory, Record
from services.doctor.times import iso

FAILED_STATES = frozenset({"FAILED", "DEAD_LETTERED", "UNANSWERED"})
APPLE_CHECKLIST = (
    "Install the Managed Configuration and APNs logging profiles on the device, reproduce the "
    "issue, take a sysdiagnose and attach it; collect it within a day or two of the failures "
    "starting."
)


@dataclass(frozen=True, slots=True)
class FailedPush:
    """One push the device never acted on, with what APNs answered when it was sent."""

    at: int
    state: str
    status: int | None
    reason: str | None
    apns_id: str | None
    job_id: str
    attempt: int
    repush: int
    topic: str | None
    token_hex: str | None
    push_magic: str | None


@dataclass(frozen=True, slots=True)
class FeedbackBundle:
    enrollment_id: str
    udid: str | None
    push_topic: str | None
    push_token: str | None
    push_magic: str | None
    last_answered_at: int | None
    failures_began_at: int | None
    failed_pushes: tuple[FailedPush, ...]
    earlier_failures: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, times as UTC ISO 8601."""
        data = asdict(self)
        for name in ("last_answered_at", "failures_began_at"):
            data[name] = iso(data[name])
        for push in data["failed_pushes"]:
            push["at"] = iso(push["at"])
        data["apple_checklist"] = APPLE_CHECKLIST
        return data


def build_feedback(history: DeviceHistory) -> FeedbackBundle:
    """The bundle for the current failure episode (failures after the last answered push)."""
    failures = sorted(_failed_pushes(history), key=lambda p: p.at)
    answered = [o["at"] for o in history.outcomes if o["state"] == "ANSWERED"]
    last_answered = max(answered, default=None)
    episode = tuple(p for p in failures if last_answered is None or p.at > last_answered)
    used = episode[-1] if episode else None
    record = history.record or {}
    return FeedbackBundle(
        enrollment_id=history.enrollment_id,
        udid=record.get("udid"),
        push_topic=used.topic if used and used.topic else record.get("topic"),
        push_token=used.token_hex if used and used.token_hex else record.get("token_hex"),
        push_magic=used.push_magic if used and used.push_magic else record.get("push_magic"),
        last_answered_at=last_answered,
        failures_began_at=episode[0].at if episode else None,
        failed_pushes=episode,
        earlier_failures=len(failures) - len(episode),
    )


def _failed_pushes(history: DeviceHistory) -> list[FailedPush]:
    """Permanent failures and dead letters as answered; unanswered pushes at their send time,
    with the 200 and apns-id APNs gave (from the SENT outcome, else from the alert)."""
    sent = {o["job_id"]: o for o in history.outcomes if o["state"] == "SENT"}
    alerts = {a["job_id"]: a for a in history.alerts}
    pushes: list[FailedPush] = []
    for o in history.outcomes:
        if o["state"] not in FAILED_STATES:
            continue
        if o["state"] == "UNANSWERED":
            alert = alerts.pop(o["job_id"], None)
            pushes.append(_unanswered(o, sent.get(o["job_id"]), alert))
        else:
            pushes.append(_push(o, o["at"], o.get("status"), o.get("reason"), o.get("apns_id")))
    # An alert without an UNANSWERED outcome is still an unanswered push.
    pushes.extend(_unanswered(a, sent.get(job), a) for job, a in alerts.items())
    return pushes


def _unanswered(base: Record, sent: Record | None, alert: Record | None) -> FailedPush:
    at = sent["at"] if sent else alert["pushed_at"] if alert else base["at"]
    # An alert is, by contract, about a push APNs accepted: its answer was a 200.
    status = sent.get("status") if sent else 200 if alert else None
    apns_id = (sent or {}).get("apns_id") or (alert or {}).get("apns_id")
    reason = f"unanswered: {alert['diagnosis'].lower()}" if alert else "unanswered"
    return _push(base, at, status, reason, apns_id, state="UNANSWERED")


def _push(src: Record, at: int, status: int | None, reason: str | None, apns_id: str | None,
          state: str | None = None) -> FailedPush:
    return FailedPush(
        at=at, state=state or src["state"], status=status, reason=reason, apns_id=apns_id,
        job_id=src["job_id"], attempt=src.get("attempt", 0), repush=src.get("repush", 0),
        topic=src.get("topic"), token_hex=src.get("token_hex"), push_magic=src.get("push_magic"),
    )
