"""An enrollment's push history and its current diagnosis, read back from the topics.

Outcomes say what APNs answered and what the correlator concluded; alerts carry the
correlator's diagnosis of an unanswered push (`services.correlator.diagnose`). The diagnosis
shown is the newest evidence: an alert newer than the last terminal outcome wins, otherwise the
last terminal outcome says it (an answered push after an old alert means the device is healthy
again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.common.accounting import COALESCED
from services.common.catalogue import Topics
from services.common.errors import TopicReadError
from services.common.registry_view import DeviceRecord, load_registry
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings
from services.common.snapshot import read_topic
from services.doctor.errors import DoctorError
from services.doctor.probe import PROBE_TIMEOUT_S, probe

Record = dict[str, Any]

TERMINAL = frozenset({"FAILED", "DEAD_LETTERED", "SKIPPED", "ANSWERED", "UNANSWERED"})
WRONG_TOPIC_REASONS = frozenset({"WrongTopic", "DeviceTokenNotForTopic", "BadTopic",
                                 "TopicDisallowed"})
#: Reasons meaning APNs no longer knows the token for this topic: the profile was removed.
DEAD_TOKEN_REASONS = frozenset({"Unregistered", "ExpiredToken", "token_dead"})


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A correlator diagnosis name (or healthy / unknown / a skip reason) and its evidence."""

    name: str
    why: str


@dataclass(frozen=True, slots=True)
class DeviceHistory:
    """Everything the pipeline recorded about one enrollment, oldest first."""

    enrollment_id: str
    record: DeviceRecord | None
    outcomes: list[Record]
    alerts: list[Record]
    undecodable: int
    #: The correlator's latest EnrollmentActivity (INACTIVE after a long silence, the last
    #: re-arm push), or None (never written, or no activity topic in this deployment).
    activity: Record | None = None

    @property
    def diagnosis(self) -> Diagnosis:
        return diagnose(self.outcomes, self.alerts)

    @property
    def last_contact_at(self) -> int | None:
        """The registry's last contact, or the last answered push if the registry has none."""
        if self.record and self.record.get("last_contact_at"):
            return int(self.record["last_contact_at"])
        answered = [o["at"] for o in self.outcomes if o["state"] == "ANSWERED"]
        return max(answered, default=None)


def load_history(
    settings: KafkaSettings, enrollment_id: str, serde: AvroSerde | None = None,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
) -> DeviceHistory:
    """Registry record, outcomes and alerts of one enrollment (three bounded scans).

    Raises DoctorError at once, with the reason, when Kafka or one of the topics is not there
    (instead of three scans waiting out their timeouts)."""
    serde = serde or serde_for(settings)
    topics = Topics(settings.topic_prefix)
    why = probe(settings, [topics.outcomes, topics.alerts, topics.registry], probe_timeout_s)
    if why is not None:
        raise DoctorError(why)
    outcomes = read_topic(settings, topics.outcomes, "PushOutcome", enrollment_id, serde)
    alerts = read_topic(settings, topics.alerts, "UnansweredPush", enrollment_id, serde)
    try:
        activity = read_topic(settings, topics.activity, "EnrollmentActivity", enrollment_id,
                              serde)
        latest = [r.value for r in activity.records if r.value is not None]
    except TopicReadError:  # a deployment from before silent-device care
        latest = []
    return DeviceHistory(
        enrollment_id=enrollment_id,
        record=load_registry(settings, enrollment_id).get(enrollment_id),
        outcomes=sorted((r.value for r in outcomes.records if r.value is not None),
                        key=lambda o: (o["at"], o["attempt"])),
        alerts=sorted((r.value for r in alerts.records if r.value is not None),
                      key=lambda a: a["flagged_at"]),
        undecodable=outcomes.undecodable + alerts.undecodable,
        activity=latest[-1] if latest else None,
    )


def diagnose(outcomes: list[Record], alerts: list[Record]) -> Diagnosis:
    """The current diagnosis from the newest alert or terminal outcome (inputs oldest first)."""
    terminal = [o for o in outcomes if o["state"] in TERMINAL and o.get("reason") != COALESCED]
    last = terminal[-1] if terminal else None
    alert = alerts[-1] if alerts else None
    if alert is not None and (last is None or last["state"] == "UNANSWERED"
                              or alert["flagged_at"] >= last["at"]):
        evidence = ", ".join(f"{k}={v}" for k, v in sorted(alert["evidence"].items()))
        return Diagnosis(alert["diagnosis"].lower(),
                         f"correlator alert on {alert['job_id']}" + (f": {evidence}" if evidence
                                                                     else ""))
    if last is None:
        waiting = sum(1 for o in outcomes if o["state"] in ("SENT", "RETRYING"))
        return Diagnosis("unknown", f"{waiting} push(es) awaiting an answer" if waiting
                         else "no push recorded for this enrollment")
    return _from_outcome(last)


def _from_outcome(o: Record) -> Diagnosis:
    state, reason = o["state"], o.get("reason") or ""
    status = f"{o['status']} " if o.get("status") is not None else ""
    if state == "ANSWERED":
        return Diagnosis("healthy", f"the device answered push {o['job_id']}")
    if state == "UNANSWERED":
        return Diagnosis("device_unreachable", f"push {o['job_id']} unanswered, no alert detail")
    if reason == "checked_out":
        return Diagnosis("unenrolled", "the device checked out; pushes to it are skipped")
    if reason in WRONG_TOPIC_REASONS:
        return Diagnosis("wrong_topic", f"APNs/sender refused the topic: {status}{reason}")
    if reason in DEAD_TOKEN_REASONS:
        return Diagnosis("unenrolled", f"APNs no longer knows the token: {status}{reason}")
    if reason == "BadDeviceToken":
        return Diagnosis("stale_token", f"APNs rejected the token: {status}{reason}")
    if state == "SKIPPED":
        return Diagnosis(reason or "skipped", f"the fan-out skipped the push: {reason}")
    if state == "DEAD_LETTERED":
        return Diagnosis("dead_lettered", f"attempts exhausted; last error: {status}{reason}")
    return Diagnosis("apns_rejected", f"APNs refused the push: {status}{reason}")
