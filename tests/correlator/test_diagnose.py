"""The pure diagnosis: one row per cause of the Apple seed, most specific first."""

from __future__ import annotations

import pytest

from services.correlator.diagnose import (
    Diagnosis,
    EnrollmentFacts,
    PushFacts,
    Sibling,
    diagnose,
    failed_topic_finding,
)

T = 1_795_000_000_000
TOPIC, OTHER_TOPIC = "com.apple.mgmt.A", "com.apple.mgmt.B"
TOKEN, NEW_TOKEN = "a" * 64, "b" * 64
PUSH = PushFacts(T, TOPIC, TOKEN, "magic-1", T - 60_000)
ENROLLED = EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 86_400_000, T - 60_000, T - 30_000)
NEWER_TWIN = Sibling("E2", "magic-2", T - 10_000, checked_out=False)


@pytest.mark.parametrize(
    ("push", "enrollment", "siblings", "expected", "evidence_key"),
    [
        (PUSH,
         EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 9_000_000, T - 60_000, T - 1, T - 5_000),
         [], Diagnosis.UNENROLLED, "checkout_at"),
        (PUSH, EnrollmentFacts(OTHER_TOPIC, TOKEN, "magic-1", T - 9_000_000, T - 60_000), [],
         Diagnosis.WRONG_TOPIC, "enrollment_topic"),
        (PUSH, EnrollmentFacts(TOPIC, NEW_TOKEN, "magic-1", T - 9_000_000, T - 1_000), [],
         Diagnosis.STALE_TOKEN, "newer_token_at"),
        (PUSH, ENROLLED, [NEWER_TWIN], Diagnosis.STALE_PUSH_MAGIC, "duplicate_enrollment"),
        (PushFacts(T, TOPIC, TOKEN, "magic-1", T - 2_000, repushed=True),
         EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 2_000, T - 2_000), [],
         Diagnosis.DEVICE_UNREACHABLE, "enrollment_race"),
        (PUSH, ENROLLED, [], Diagnosis.DEVICE_UNREACHABLE, "last_contact_at"),
        (PUSH, EnrollmentFacts(), [], Diagnosis.DEVICE_UNREACHABLE, "enrollment"),
    ],
)
def test_each_cause(push: PushFacts, enrollment: EnrollmentFacts, siblings: list[Sibling],
                    expected: Diagnosis, evidence_key: str) -> None:
    finding = diagnose(push, enrollment, siblings, race_enrollment_ms=5_000)
    assert finding.diagnosis is expected
    assert evidence_key in finding.evidence


def test_checkout_before_a_new_token_update_is_a_re_enrollment_not_unenrolled() -> None:
    e = EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 60_000, T - 60_000, T - 1, T - 90_000)
    assert not e.checked_out
    assert diagnose(PUSH, e, [], 5_000).diagnosis is Diagnosis.DEVICE_UNREACHABLE


def test_unenrolled_wins_over_wrong_topic() -> None:
    e = EnrollmentFacts(OTHER_TOPIC, NEW_TOKEN, "m", T - 9_000_000, T - 60_000, None, T - 1)
    assert diagnose(PUSH, e, [NEWER_TWIN], 5_000).diagnosis is Diagnosis.UNENROLLED


def test_an_older_or_checked_out_twin_is_not_stale_magic() -> None:
    older = Sibling("E0", "magic-0", T - 9_000_000, checked_out=False)
    gone = Sibling("E2", "magic-2", T - 10_000, checked_out=True)
    same = Sibling("E3", "magic-1", T - 10_000, checked_out=False)
    got = diagnose(PUSH, ENROLLED, [older, gone, same], 5_000)
    assert got.diagnosis is Diagnosis.DEVICE_UNREACHABLE


def test_race_evidence_needs_the_repush_and_the_window() -> None:
    e = EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 2_000, T - 2_000)
    not_repushed = PushFacts(T, TOPIC, TOKEN, "magic-1", T - 2_000)
    assert "enrollment_race" not in diagnose(not_repushed, e, [], 5_000).evidence
    late = EnrollmentFacts(TOPIC, TOKEN, "magic-1", T - 60_000, T - 60_000)
    repushed = PushFacts(T, TOPIC, TOKEN, "magic-1", T - 60_000, repushed=True)
    assert "enrollment_race" not in diagnose(repushed, late, [], 5_000).evidence


def test_a_newer_token_set_before_the_job_was_built_is_not_stale() -> None:
    e = EnrollmentFacts(TOPIC, NEW_TOKEN, "magic-1", T - 9_000_000, T - 120_000)
    assert diagnose(PUSH, e, [], 5_000).diagnosis is Diagnosis.DEVICE_UNREACHABLE


@pytest.mark.parametrize("reason", ["WrongTopic", "DeviceTokenNotForTopic", "BadTopic"])
def test_failed_wrong_topic_reasons(reason: str) -> None:
    finding = failed_topic_finding(reason, ENROLLED)
    assert finding is not None and finding.diagnosis is Diagnosis.WRONG_TOPIC
    assert finding.evidence["apns_reason"] == reason


def test_other_failures_are_no_topic_alert() -> None:
    assert failed_topic_finding("BadDeviceToken", ENROLLED) is None
    assert failed_topic_finding(None, ENROLLED) is None


def test_a_duplicate_whose_newer_record_checked_out_is_unenrolled() -> None:
    """Overlapping causes: the old record of a device (its CheckOut lost, an older PushMagic)
    whose newer record has checked out since. The device left: UNENROLLED, not offline."""
    gone = Sibling("E2", "magic-2", T - 10_000, checked_out=True)
    got = diagnose(PUSH, ENROLLED, [gone], 5_000)
    assert got.diagnosis is Diagnosis.UNENROLLED
    assert got.evidence == {"checked_out_duplicate": "E2"}
    still_here = Sibling("E3", "magic-3", T - 5_000, checked_out=False)
    assert diagnose(PUSH, ENROLLED, [gone, still_here], 5_000).diagnosis is (
        Diagnosis.STALE_PUSH_MAGIC)
    older_gone = Sibling("E0", "magic-0", T - 9_000_000, checked_out=True)
    assert diagnose(PUSH, ENROLLED, [older_gone], 5_000).diagnosis is (
        Diagnosis.DEVICE_UNREACHABLE)
