"""Ground truth: why each simulated device does or does not answer a push.

An accuracy run compares the correlator's diagnosis per enrollment with :attr:`Cause.diagnosis`,
the name (docs/ARCHITECTURE.md "Diagnoses") a perfect correlator would give from the evidence
the server can see (a silent unenrollment looks exactly like an unreachable device, so that is
its right answer).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ANSWERED", "PRECEDENCE", "Cause", "DeviceTruth", "rightful"]

#: The "diagnosis" of a push the device answered.
ANSWERED = "answered"

#: When one record has several causes at once, the right diagnosis is the one an operator must
#: act on first, the earliest here (docs/ARCHITECTURE.md "Diagnoses"):
#: - unenrolled: the device left (its CheckOut, or a newer record's): nothing else matters, the
#:   record is to be removed;
#: - wrong_topic: no push on that topic reaches the device, whatever token, magic or network;
#:   the certificate is the fix;
#: - stale_token: the server pushes a token the device dropped: re-push to the new one;
#: - stale_push_magic: a duplicate record the device no longer uses (its token and magic are
#:   both old): remove it, or wait for the self-healing push;
#: - enrollment_race: pushed within moments of enrolling; the race-window re-push settles it
#:   (an ANSWERED verdict naming it) unless the device is also unreachable;
#: - device_unreachable: offline, wiped, slow past the deadline: the server holds no evidence of
#:   a fault of its own, so nothing to act on but the device;
#: - answered: the device called before the deadline (a late call does not undo an UNANSWERED).
PRECEDENCE = ("unenrolled", "wrong_topic", "stale_token", "stale_push_magic", "enrollment_race",
              "device_unreachable", ANSWERED)


def rightful(diagnoses: set[str] | frozenset[str]) -> str:
    """The diagnosis that wins among a record's overlapping ones (:data:`PRECEDENCE`)."""
    unknown = set(diagnoses) - set(PRECEDENCE)
    if unknown or not diagnoses:
        raise ValueError(f"not diagnoses: {sorted(unknown) or 'none given'}")
    return min(diagnoses, key=PRECEDENCE.index)


class Cause(enum.Enum):
    """One failure cause of the Apple seed (or none), as a share of a scenario's fleet."""

    HEALTHY = "healthy"
    OFFLINE = "offline"
    UNENROLLED_SILENT = "unenrolled_silent"  # profile removed, the one CheckOut attempt failed
    UNENROLLED_CHECKOUT = "unenrolled_checkout"
    WIPED = "wiped"  # wiped without CheckOut
    WRONG_TOPIC = "wrong_topic"  # push certificate replaced instead of renewed
    RESTORED_TOKEN = "restored_token"  # backup and restore: the token changed
    STALE_MAGIC = "stale_magic"  # second enrollment record with an old PushMagic
    ENROLLMENT_RACE = "enrollment_race"

    @property
    def diagnosis(self) -> str:
        """The section 7 diagnosis for a push to this device's (stale, where there are two)
        enrollment, or :data:`ANSWERED`."""
        return _DIAGNOSIS[self]


_DIAGNOSIS = {
    Cause.HEALTHY: ANSWERED,
    Cause.OFFLINE: "device_unreachable",
    Cause.UNENROLLED_SILENT: "device_unreachable",
    Cause.UNENROLLED_CHECKOUT: "unenrolled",
    Cause.WIPED: "device_unreachable",
    Cause.WRONG_TOPIC: "wrong_topic",
    Cause.RESTORED_TOKEN: "stale_token",
    Cause.STALE_MAGIC: "stale_push_magic",
    Cause.ENROLLMENT_RACE: "enrollment_race",
}


@dataclass(frozen=True, slots=True)
class DeviceTruth:
    """What a device really is, for the confusion matrix.

    ``enrollment_id`` is the record the server's pushes go wrong for (for STALE_MAGIC the old
    record E1); ``current_enrollment_id`` is the one the device itself uses (E2), which answers.
    """

    udid: str
    tenant: str
    cause: Cause
    enrollment_id: str
    current_enrollment_id: str
    topic: str
    token_hex: str
    push_magic: str

    @property
    def diagnosis(self) -> str:
        return self.cause.diagnosis
