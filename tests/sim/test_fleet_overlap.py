"""The overlapping world's parts without network: the precedence of overlapping causes, the
device behaviours it adds (slow polls, held check-ins, a stale record delivered last, lost races)
and how its truth is built. Simulated time only (a manual clock the test moves)."""

from __future__ import annotations

from collections import Counter

import pytest

from services.common.clock import Clock
from services.sim.fleet import (
    Cause,
    Enrollment,
    Fleet,
    FleetParams,
    RecordingSink,
    ScenarioSpec,
    build_scenario,
)
from services.sim.fleet.overlap import OverlapSpec, Profile, build_overlap
from services.sim.fleet.truth import ANSWERED, PRECEDENCE, rightful
from tests.sim.test_fleet_device import TOPIC, device, push
from tests.support.manual_clock import ManualClock

H = 3_600_000


def test_the_operator_acts_first_on_the_server_side_fault() -> None:
    assert rightful({"device_unreachable", "stale_push_magic"}) == "stale_push_magic"
    assert rightful({"stale_push_magic", "unenrolled"}) == "unenrolled"
    assert rightful({"wrong_topic", "device_unreachable", "stale_token"}) == "wrong_topic"
    assert rightful({"enrollment_race", ANSWERED}) == "enrollment_race"
    assert rightful({ANSWERED}) == ANSWERED and PRECEDENCE[-1] == ANSWERED
    with pytest.raises(ValueError):
        rightful({"offline"})
    with pytest.raises(ValueError):
        rightful(set())


def test_a_slow_device_polls_after_its_own_delay() -> None:
    sink, clock = RecordingSink(), ManualClock()
    with Fleet(clock, sink, FleetParams(checkin_delay_ms=500)) as fleet:
        slow = device(checkin_delay_ms=27_000)
        fleet.add([slow])
        assert fleet.deliver(push())
        fleet.scheduler.wait_idle()
        clock.advance(26_999)
        fleet.scheduler.wait_idle()
        assert sink.events == []
        clock.advance(1)
        fleet.scheduler.wait_idle()
    [poll] = sink.events
    assert poll["raw_message_type"] == "Idle" and poll["occurred_at"] == clock.now_ms()


def test_a_poll_delivered_late_keeps_the_time_it_was_made() -> None:
    sink, clock = RecordingSink(), ManualClock()
    with Fleet(clock, sink, FleetParams(checkin_delay_ms=500)) as fleet:
        d = device(poll_delivered_after_ms=6_000)
        fleet.add([d])
        assert fleet.deliver(push())
        fleet.scheduler.wait_idle()
        clock.advance(500)
        fleet.scheduler.wait_idle()
        polled_at = clock.now_ms()
        clock.advance(5_999)
        fleet.scheduler.wait_idle()
        assert sink.events == []
        clock.advance(1)
        fleet.scheduler.wait_idle()
    [poll] = sink.events
    assert poll["occurred_at"] == polled_at == clock.now_ms() - 6_000


def test_a_held_poll_keeps_its_enrollment_stamp_and_arrives_on_release() -> None:
    sink, clock = RecordingSink(), ManualClock()
    with Fleet(clock, sink) as fleet:
        d = device(held_poll=True, enrolled=False)
        fleet.add([d])
        fleet.enroll([d])
        enrolled_at = clock.now_ms()
        clock.advance(20_000)
        fleet.scheduler.wait_idle()
        assert [e["raw_message_type"] for e in sink.events] == ["Authenticate", "TokenUpdate"]
        assert fleet.release_held() == 1
        assert fleet.release_held() == 0
    assert sink.events[-1]["raw_message_type"] == "Idle"
    assert sink.events[-1]["occurred_at"] == enrolled_at < clock.now_ms()


def test_a_stale_record_delivered_last_still_carries_the_older_stamps() -> None:
    sink, clock = RecordingSink(), ManualClock()
    old = Enrollment("E1", "acme", "UDID-1", TOPIC, "a" * 64, "M1")
    with Fleet(clock, sink, FleetParams(stale_enrollment_age_ms=H)) as fleet:
        d = device(stale_enrollment=old, stale_delivered_last=True, enrolled=False)
        fleet.add([d])
        fleet.enroll([d])
    order = [(e["enrollment_id"], e["raw_message_type"]) for e in sink.events]
    assert order == [("UDID-1", "Authenticate"), ("UDID-1", "TokenUpdate"),
                     ("E1", "Authenticate"), ("E1", "TokenUpdate")]
    assert sink.events[-1]["occurred_at"] == sink.events[0]["occurred_at"] - H


def test_a_push_while_deaf_counts_as_a_lost_race() -> None:
    d = device(listen_delay_ms=2_000)
    d.on_push(d.token_hex, "M2", 1_999)
    assert d.races_lost == 1
    d.on_push(d.token_hex, "M2", 2_000)
    assert d.races_lost == 1 and d.pushes_received == 1


def test_the_overlapping_world_is_deterministic_and_its_truth_follows_the_precedence() -> None:
    spec = OverlapSpec(1_600, {"acme": TOPIC, "globex": TOPIC + "2"}, deadline_ms=30_000,
                       shares={p: 1.0 for p in Profile}, seed=5)
    a = build_overlap(spec, Clock(), RecordingSink())
    b = build_overlap(spec, Clock(), RecordingSink())
    assert [d.enrollment for d in a.devices] == [d.enrollment for d in b.devices]
    assert {p: len(a.having(p)) for p in Profile} == {p: 100 for p in Profile}
    assert len(a.fresh) == 400 and len(a.early) == 1_200
    for racer in a.having(Profile.FRESH_RACE):
        assert 1_000 <= racer.listen_delay_ms <= 9_000
    for late in a.having(Profile.LATE_AFTER_DEADLINE):
        assert late.checkin_delay_ms == 33_000
    for late in a.having(Profile.IN_TIME_DELIVERED_LATE):
        assert (late.checkin_delay_ms, late.poll_delivered_after_ms) == (27_000, 6_000)
    a.having(Profile.FRESH_RACE)[0].races_lost = 1
    expected, records = a.expected(), a.records()
    assert len(expected) == len(records) == 1_900  # three profiles keep a duplicate record
    got: dict[str, set[str]] = {}
    for enrollment_id, (_, label) in records.items():
        got.setdefault(label, set()).add(expected[enrollment_id])
    assert got["offline+stale_magic (old record)"] == {"stale_push_magic"}
    assert got["offline+stale_magic"] == {"device_unreachable"}
    assert got["checked_out+stale_magic (old record)"] == {"unenrolled"}
    assert got["restored+stale_magic"] == {"stale_token"}
    assert got["wrong_topic+offline"] == {"wrong_topic"}
    assert got["late_after_deadline"] == {"device_unreachable"}
    assert got["late_in_time"] == got["old_poll_late"] == {ANSWERED}
    assert got["in_time_delivered_late"] == {ANSWERED}
    assert got["fresh+race"] == {"enrollment_race", ANSWERED}  # only the one that lost it


def test_the_one_cause_world_scores_a_racer_that_never_lost_as_answered() -> None:
    scenario = build_scenario(ScenarioSpec(20, {"acme": TOPIC}, {Cause.ENROLLMENT_RACE: 1.0}),
                              Clock(), RecordingSink())
    scenario.devices[0].races_lost = 1
    seen, built = scenario.expected_as_seen(), scenario.expected_by_enrollment()
    assert set(built.values()) == {"enrollment_race"}
    assert seen[scenario.devices[0].enrollment.enrollment_id] == "enrollment_race"
    assert Counter(seen.values()) == {ANSWERED: 19, "enrollment_race": 1}
