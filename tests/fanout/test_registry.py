"""The registry's transition rules, without Kafka."""

from __future__ import annotations

from typing import Any

import pytest

from services.fanout.dead_tokens import dead_change, is_marked
from services.fanout.registry import (
    CheckinRefusal,
    Record,
    SkipReason,
    apply_checkin,
    checkin_refusal,
    clamp_future,
    expired_pending,
    foreign_checkin,
    mark_token_dead,
    skip_reason,
)
from services.sender.service import TOKEN_DEAD
from tests.fanout.harness import AT, T1, checkin, enroll

NOW = AT + 1_000_000


def run(events: list[dict[str, Any]], record: Record | None = None) -> Record | None:
    for event in events:
        record = apply_checkin(record, event, NOW) or record
    return record


def enrolled(eid: str = "E1") -> Record:
    record = run(enroll(eid))
    assert record is not None
    return record


def test_authenticate_then_token_update_enrolls() -> None:
    record = run(enroll("E1")[:1])
    assert record is not None
    assert (record["state"], record["topic"], record["token_hex"], record["enrolled_at"]) == (
        "AUTHENTICATED", T1, None, None)
    record = enrolled()
    assert (record["state"], record["enrolled_at"], record["token_updated_at"],
            record["last_contact_at"], record["updated_at"]) == (
        "ENROLLED", AT + 10, AT + 10, AT + 10, NOW)
    assert (record["tenant"], record["udid"], record["push_magic"]) == ("acme", "E1", "magic-E1")


def test_enrolled_at_is_the_first_token_update_only() -> None:
    later = checkin("E1", "TOKEN_UPDATE", AT + 500, token_hex="b" * 64, push_magic="m2")
    record = run([later], enrolled())
    assert record is not None
    assert (record["enrolled_at"], record["token_updated_at"], record["token_hex"]) == (
        AT + 10, AT + 500, "b" * 64)


def test_a_late_token_update_only_counts_as_contact() -> None:
    record = enrolled()
    late = checkin("E1", "TOKEN_UPDATE", AT + 5, token_hex="c" * 64, push_magic="old")
    assert apply_checkin(record, late, NOW) is None  # older than both trifecta and contact


def test_a_replayed_authenticate_or_checkout_cannot_undo_a_newer_token_or_410() -> None:
    """A restarted worker re-reads uncommitted check-ins, possibly after re-reading the 410."""
    dead = mark_token_dead(enrolled(), enrolled()["token_hex"], AT + 100, NOW)
    assert dead is not None
    replayed = run([*enroll("E1"), checkin("E1", "CHECK_OUT", AT + 5)], dead)
    assert replayed is not None
    assert (replayed["state"], replayed["token_hex"], replayed["token_dead_since"]) == (
        "ENROLLED", dead["token_hex"], AT + 100)


def test_reauthentication_starts_a_new_enrollment_keeping_udid_and_topic() -> None:
    record = mark_token_dead(enrolled(), enrolled()["token_hex"], AT + 50, NOW)
    record = run([checkin("E1", "AUTHENTICATE", AT + 100, udid=None)], record)
    assert record is not None
    assert (record["state"], record["token_hex"], record["push_magic"], record["enrolled_at"],
            record["token_dead_since"], record["udid"], record["topic"]) == (
        "AUTHENTICATED", None, None, None, None, "E1", T1)


def test_checkout_keeps_the_trifecta_and_a_token_update_re_enrolls() -> None:
    record = run([checkin("E1", "CHECK_OUT", AT + 20)], enrolled())
    assert record is not None
    assert (record["state"], record["token_hex"]) == ("CHECKED_OUT", enrolled()["token_hex"])
    record = run([checkin("E1", "TOKEN_UPDATE", AT + 30, token_hex="d" * 64)], record)
    assert record is not None and record["state"] == "ENROLLED"


def test_any_message_is_contact_but_unknown_enrollments_stay_unknown() -> None:
    idle = checkin("E1", "COMMAND_REPORT", AT + 99, status="Idle")
    record = apply_checkin(enrolled(), idle, NOW)
    assert record is not None and record["last_contact_at"] == AT + 99
    assert apply_checkin(None, idle, NOW) is None
    assert apply_checkin(None, checkin("E9", "CHECK_OUT", AT), NOW) is None


@pytest.mark.parametrize(
    ("current", "kind", "tenant", "refusal"),
    [
        (None, "AUTHENTICATE", "acme", None),
        (None, "TOKEN_UPDATE", "acme", None),
        (None, "AUTHENTICATE", "", CheckinRefusal.NO_TENANT),
        (None, "TOKEN_UPDATE", None, CheckinRefusal.NO_TENANT),
        (None, "CHECK_OUT", "acme", CheckinRefusal.UNKNOWN_ENROLLMENT),
        (None, "COMMAND_REPORT", "acme", CheckinRefusal.UNKNOWN_ENROLLMENT),
        ("acme", "COMMAND_REPORT", "acme", None),
        ("acme", "CHECK_OUT", "acme", None),
        ("acme", "CHECK_OUT", "", CheckinRefusal.FOREIGN_TENANT),  # as before: counted foreign
        ("", "CHECK_OUT", "", CheckinRefusal.NO_TENANT),
        ("acme", "TOKEN_UPDATE", "globex", CheckinRefusal.FOREIGN_TENANT),
    ],
)
def test_checkin_refusal(current: str | None, kind: str, tenant: str | None,
                         refusal: CheckinRefusal | None) -> None:
    """No tenant, another tenant, or an unknown enrollment that is not enrolling: not applied."""
    record = {**enrolled(), "tenant": current} if current is not None else None
    assert checkin_refusal(record, checkin("E1", kind, AT + 100, tenant=tenant)) == refusal


def test_a_pending_enrollment_expires_after_the_ttl_an_enrolled_one_never() -> None:
    pending = run([checkin("E1", "AUTHENTICATE", AT)])
    assert pending is not None and pending["state"] == "AUTHENTICATED"
    ttl = 1000
    assert not expired_pending(pending, pending["updated_at"] + ttl, ttl)
    assert expired_pending(pending, pending["updated_at"] + ttl + 1, ttl)
    enrolled_record = enrolled()
    assert not expired_pending(enrolled_record, enrolled_record["updated_at"] + 10**12, ttl)
    checked_out = run([checkin("E1", "CHECK_OUT", AT + 20)], enrolled_record)
    assert checked_out is not None
    assert not expired_pending(checked_out, checked_out["updated_at"] + 10**12, ttl)


def test_410_kills_only_the_current_token_and_a_newer_token_update_revives() -> None:
    record = enrolled()
    assert mark_token_dead(record, "f" * 64, AT + 50, NOW) is None
    assert mark_token_dead(None, "f" * 64, AT + 50, NOW) is None
    assert mark_token_dead(record, record["token_hex"], AT + 5, NOW) is None  # refreshed since
    dead = mark_token_dead(record, record["token_hex"], AT + 50, NOW)
    assert dead is not None and dead["token_dead_since"] == AT + 50
    older = checkin("E1", "TOKEN_UPDATE", AT + 40, token_hex=record["token_hex"])
    assert run([older], dead)["token_dead_since"] == AT + 50  # type: ignore[index]
    newer = checkin("E1", "TOKEN_UPDATE", AT + 60, token_hex=record["token_hex"])
    assert run([newer], dead)["token_dead_since"] is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "tenant", "kind", "reason"),
    [
        ({}, "acme", "MDM", None),
        ({}, "globex", "MDM", SkipReason.FOREIGN_TENANT),
        ({"tenant": ""}, "globex", "MDM", SkipReason.FOREIGN_TENANT),  # nobody's: nobody pushes
        ({"tenant": ""}, "acme", "MDM", SkipReason.FOREIGN_TENANT),
        ({"tenant": "globex"}, "acme", "MDM", SkipReason.FOREIGN_TENANT),
        ({"state": "CHECKED_OUT"}, "acme", "MDM", SkipReason.CHECKED_OUT),
        ({"state": "AUTHENTICATED", "token_hex": None}, "acme", "MDM", SkipReason.NO_TOKEN),
        ({"push_magic": None}, "acme", "MDM", SkipReason.NO_TOKEN),
        ({"push_magic": None}, "acme", "APS", None),
        ({"token_dead_since": AT}, "acme", "MDM", SkipReason.TOKEN_DEAD),
    ],
)
def test_skip_reason(change: Record, tenant: str, kind: str, reason: SkipReason | None) -> None:
    assert skip_reason({**enrolled(), **change}, tenant, kind) == reason


def test_an_unknown_enrollment_is_skipped() -> None:
    assert skip_reason(None, "acme", "MDM") == SkipReason.UNKNOWN_ENROLLMENT


def test_a_foreign_tenant_is_reported_as_an_unknown_enrollment() -> None:
    assert SkipReason.FOREIGN_TENANT.reported is SkipReason.UNKNOWN_ENROLLMENT
    assert all(r.reported is r for r in SkipReason if r is not SkipReason.FOREIGN_TENANT)
    assert SkipReason.COALESCED.reported is SkipReason.COALESCED


@pytest.mark.parametrize(
    ("owner", "sender", "foreign"),
    [
        ("acme", "acme", False),
        ("acme", "globex", True),
        ("acme", "", True),  # a check-in naming no tenant cannot prove it is acme's device
        ("globex", "acme", True),
        ("", "acme", False),  # a record no tenant claimed yet: the first named tenant takes it
        ("", "", False),
    ],
)
def test_a_checkin_from_another_tenant_is_foreign(owner: str, sender: str, foreign: bool) -> None:
    record = {**enrolled(), "tenant": owner}
    event = checkin("E1", "CHECK_OUT", AT + 100, tenant=sender)
    assert foreign_checkin(record, event) is foreign


def test_a_checkin_for_an_enrollment_never_seen_is_never_foreign() -> None:
    assert foreign_checkin(None, checkin("E9", "AUTHENTICATE", AT, tenant="globex")) is False


def test_only_outcomes_the_sender_marked_are_read_and_a_410_kills_its_token() -> None:
    assert is_marked(TOKEN_DEAD) and is_marked(dict(TOKEN_DEAD))
    assert not is_marked(None) and not is_marked([]) and not is_marked([("other", b"1")])
    outcome = {"token_hex": "ab" * 32, "apns_timestamp": None, "at": 5}
    assert dead_change(outcome) == {"dead": {"token_hex": "ab" * 32, "since": 5}}
    assert dead_change(outcome | {"apns_timestamp": 3})["dead"]["since"] == 3


def test_a_time_ahead_of_the_clock_beyond_the_tolerance_is_clamped_to_now() -> None:
    assert clamp_future(NOW + 300_000, NOW, 300_000) is None  # within the skew allowed
    assert clamp_future(NOW - 1, NOW, 0) is None
    assert clamp_future(NOW + 300_001, NOW, 300_000) == NOW
    assert clamp_future(32_503_680_000_000, NOW, 300_000) == NOW


def test_a_clamped_token_update_lets_the_next_one_apply() -> None:
    future = clamp_future(32_503_680_000_000, NOW, 300_000)
    assert future is not None
    record = run([checkin("E1", "TOKEN_UPDATE", future, topic=T1, token_hex="aa" * 32,
                          push_magic="m")])
    later = checkin("E1", "TOKEN_UPDATE", NOW + 1, topic=T1, token_hex="bb" * 32, push_magic="m")
    record = apply_checkin(record, later, NOW + 1)
    assert record is not None and record["token_hex"] == "bb" * 32
