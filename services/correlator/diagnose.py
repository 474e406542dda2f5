"""Why a push APNs accepted got no answer: the pure decision behind an UNANSWERED verdict.

Kept free of Kafka and of the packed in-memory store so each cause in the Apple seed is a table
test. The checks run from the most specific cause to the least, which is also the order an
operator must act in when several causes overlap (docs/ARCHITECTURE.md "Diagnoses"): an
unenrolled device explains everything else (its own CheckOut, or the CheckOut of a newer record
of the same device), a wrong topic never reaches the device whatever the token, a stale token
never reaches it whatever the magic, and only a push that did reach a device can be rejected for
its magic or lost in the enrollment race. Offline is what is left when the server holds no
evidence of its own fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Diagnosis(StrEnum):
    """The symbols of the UnansweredPush.diagnosis Avro enum."""

    UNENROLLED = "UNENROLLED"
    WRONG_TOPIC = "WRONG_TOPIC"
    STALE_TOKEN = "STALE_TOKEN"
    STALE_PUSH_MAGIC = "STALE_PUSH_MAGIC"
    ENROLLMENT_RACE = "ENROLLMENT_RACE"
    DEVICE_UNREACHABLE = "DEVICE_UNREACHABLE"


#: APNs reasons of a FAILED outcome that mean the push topic is not the device's.
WRONG_TOPIC_REASONS = frozenset({"WrongTopic", "DeviceTokenNotForTopic", "BadTopic"})


@dataclass(frozen=True, slots=True)
class PushFacts:
    """The push as APNs accepted it (from the SENT outcome)."""

    pushed_at: int
    topic: str | None
    token_hex: str | None
    push_magic: str | None
    token_updated_at: int | None
    #: The one race-window re-push was sent (and still no contact).
    repushed: bool = False


@dataclass(frozen=True, slots=True)
class EnrollmentFacts:
    """What the check-in events said about the pushed enrollment (all None: never seen)."""

    topic: str | None = None
    token_hex: str | None = None
    push_magic: str | None = None
    enrolled_at: int | None = None
    token_updated_at: int | None = None
    last_contact_at: int | None = None
    checkout_at: int | None = None

    @property
    def checked_out(self) -> bool:
        """A CheckOut not followed by a new TokenUpdate (a re-enrollment under the same id)."""
        return self.checkout_at is not None and (
            self.token_updated_at is None or self.checkout_at >= self.token_updated_at
        )


@dataclass(frozen=True, slots=True)
class Sibling:
    """Another enrollment record of the same UDID."""

    enrollment_id: str
    push_magic: str | None
    token_updated_at: int | None
    checked_out: bool


@dataclass(frozen=True, slots=True)
class Finding:
    diagnosis: Diagnosis
    evidence: dict[str, str] = field(default_factory=dict)


def in_enrollment_race(pushed_at: int, enrolled_at: int | None, race_enrollment_ms: int) -> bool:
    """The push went out within `race_enrollment_ms` of the enrollment's first TokenUpdate."""
    return enrolled_at is not None and abs(pushed_at - enrolled_at) <= race_enrollment_ms


def diagnose(
    push: PushFacts,
    enrollment: EnrollmentFacts,
    siblings: Sequence[Sibling],
    race_enrollment_ms: int,
) -> Finding:
    """The most specific cause the evidence supports, with the facts behind it."""
    e = enrollment
    if e.checked_out:
        return Finding(Diagnosis.UNENROLLED, {"checkout_at": str(e.checkout_at)})
    later = _newer_siblings(push, e, siblings)
    if later and all(s.checked_out for s in later):
        # A duplicate record whose CheckOut was lost, and every newer record of the device has
        # checked out since: the device left, so neither the old magic nor its being offline
        # is the point (both used to be reported, and the operator kept the dead record).
        return Finding(Diagnosis.UNENROLLED, {
            "checked_out_duplicate": max(later, key=_updated_at).enrollment_id})
    if push.topic is not None and e.topic is not None and push.topic != e.topic:
        return Finding(
            Diagnosis.WRONG_TOPIC, {"push_topic": push.topic, "enrollment_topic": e.topic}
        )
    if (
        e.token_hex is not None
        and push.token_hex is not None
        and e.token_hex != push.token_hex
        and (push.token_updated_at is None or (e.token_updated_at or 0) > push.token_updated_at)
    ):
        return Finding(
            Diagnosis.STALE_TOKEN,
            {"newer_token_at": str(e.token_updated_at), "newer_token": e.token_hex},
        )
    newer = _newer_magic_sibling(push, e, siblings)
    if newer is not None:
        return Finding(
            Diagnosis.STALE_PUSH_MAGIC,
            {
                "duplicate_enrollment": newer.enrollment_id,
                "duplicate_token_updated_at": str(newer.token_updated_at),
            },
        )
    evidence = {"last_contact_at": str(e.last_contact_at) if e.last_contact_at else "never"}
    if in_enrollment_race(push.pushed_at, e.enrolled_at, race_enrollment_ms) and push.repushed:
        # The race lasts under a second (the seed saw 0.7 s): a device that lost it answers the
        # re-push sent a window later (an ANSWERED verdict naming enrollment_race). Still silent
        # after that re-push, the race does not explain it.
        evidence.update(enrolled_at=str(e.enrolled_at), enrollment_race="ruled out: the "
                        "re-push after the race window was not answered either")
    if e.token_updated_at is None:
        evidence["enrollment"] = "unknown"
    return Finding(Diagnosis.DEVICE_UNREACHABLE, evidence)


def _newer_siblings(
    push: PushFacts, e: EnrollmentFacts, siblings: Sequence[Sibling]
) -> list[Sibling]:
    """The records of the same device whose TokenUpdate is later than ours."""
    ours_at = e.token_updated_at or push.token_updated_at or 0
    return [s for s in siblings if _updated_at(s) > ours_at]


def _updated_at(sibling: Sibling) -> int:
    return sibling.token_updated_at or 0


def _newer_magic_sibling(
    push: PushFacts, e: EnrollmentFacts, siblings: Sequence[Sibling]
) -> Sibling | None:
    """A live record of the same device whose PushMagic differs and was set later than ours."""
    live = [s for s in _newer_siblings(push, e, siblings)
            if not s.checked_out and s.push_magic is not None and s.push_magic != push.push_magic]
    return max(live, key=_updated_at) if live else None


def failed_topic_finding(reason: str | None, enrollment: EnrollmentFacts) -> Finding | None:
    """A FAILED outcome whose APNs reason says the topic is wrong (already terminal: alert only)."""
    if reason not in WRONG_TOPIC_REASONS:
        return None
    evidence = {"apns_reason": str(reason)}
    if enrollment.topic is not None:
        evidence["enrollment_topic"] = enrollment.topic
    return Finding(Diagnosis.WRONG_TOPIC, evidence)
