"""The fleet's parts without network: one device's decisions, the scheduler, scenario building."""

from __future__ import annotations

import time

import pytest

from services.common.clock import Clock
from services.sim.apns.fleet_port import (
    STATUS_ACTIVE,
    STATUS_OTHER_TOPIC,
    STATUS_UNKNOWN,
    AcceptedPush,
)
from services.sim.fleet import (
    ANSWERED,
    Cause,
    Enrollment,
    Fleet,
    FleetParams,
    Reception,
    RecordingSink,
    ScenarioSpec,
    SimDevice,
    build_scenario,
)
from services.sim.fleet.scenario import allocate
from services.sim.fleet.scheduler import Scheduler
from tests.support.manual_clock import ManualClock

H = 3_600_000
TOPIC = "com.apple.mgmt.External.00000000-0000-4000-8000-000000000001"
TOKEN, NEW_TOKEN = "a" * 64, "b" * 64


def device(**overrides: object) -> SimDevice:
    enrollment = Enrollment("UDID-1", "acme", "UDID-1", TOPIC, TOKEN, "M2")
    d = SimDevice(udid="UDID-1", cause=Cause.HEALTHY, enrollment=enrollment, token_hex=TOKEN)
    for name, value in overrides.items():
        setattr(d, name, value)
    d.enrolled_at(0)
    return d


def push(token: str = TOKEN, magic: str = "M2") -> AcceptedPush:
    return AcceptedPush(
        apns_id="id", topic=TOPIC, token_hex=token, payload=f'{{"mdm":"{magic}"}}'.encode(),
        priority=10, expiration=int(time.time()) + 60, push_type="mdm", received_at=time.time(),
    )


def test_self_healing_follows_the_seed() -> None:
    d = device()
    assert d.on_push(TOKEN, "M1", 1 * H) is Reception.WRONG_MAGIC  # recorded
    assert d.wrong_magic_since_ms == 1 * H
    assert d.on_push(TOKEN, "M1", 25 * H) is Reception.WRONG_MAGIC  # 24 h later: nothing
    assert d.on_push(TOKEN, "M2", 25 * H) is Reception.ANSWERED  # correct within 25 h: reset
    assert d.wrong_magic_since_ms is None
    assert d.on_push(TOKEN, "M1", 30 * H) is Reception.WRONG_MAGIC  # recorded afresh
    assert d.on_push(TOKEN, "M1", 55 * H - 1) is Reception.WRONG_MAGIC
    assert d.on_push(TOKEN, "M1", 55 * H) is Reception.SELF_HEAL  # exactly 25 h after
    assert d.wrong_magic_since_ms is None and d.self_heals == 1
    assert d.wrong_magic_pushes == 5 and d.pushes_received == 6 and d.pushes_lost == 0


def test_a_correct_push_after_the_window_does_not_reset_the_record() -> None:
    d = device()
    d.on_push(TOKEN, "M1", 0)
    assert d.on_push(TOKEN, "M2", 26 * H) is Reception.ANSWERED
    assert d.on_push(TOKEN, "M1", 27 * H) is Reception.SELF_HEAL


def test_race_restore_and_unenrolled_pushes_are_lost() -> None:
    race = device(listen_delay_ms=700)
    assert race.on_push(TOKEN, "M2", 699) is Reception.RACE_LOST
    assert race.on_push(TOKEN, "M2", 700) is Reception.ANSWERED
    restored = device(token_hex=NEW_TOKEN)
    assert restored.old_token_hex == TOKEN and restored.tokens == (NEW_TOKEN, TOKEN)
    assert restored.on_push(TOKEN, "M2", 1) is Reception.RESTORE_NOTICED
    assert restored.on_push(TOKEN, "M2", 2) is Reception.VOID_TOKEN
    assert restored.report_new_token().token_hex == NEW_TOKEN and restored.old_token_hex is None
    assert restored.on_push(TOKEN, "M2", 3) is Reception.VOID_TOKEN
    gone = device()
    gone.enrolled = False  # unenrolled or wiped
    assert gone.on_push(TOKEN, "M2", 1) is Reception.NOT_ENROLLED
    assert (race.pushes_lost, restored.pushes_lost, gone.pushes_lost) == (1, 3, 1)


def test_gateway_token_status() -> None:
    fleet = Fleet(Clock(), RecordingSink())
    fleet.add([device(token_hex=NEW_TOKEN)])
    assert fleet.token_status(NEW_TOKEN, TOPIC) is STATUS_ACTIVE
    assert fleet.token_status(TOKEN, TOPIC) is STATUS_ACTIVE  # restored: old token still "fine"
    assert fleet.token_status(TOKEN, TOPIC + "x") is STATUS_OTHER_TOPIC
    assert fleet.token_status("c" * 64, TOPIC) is STATUS_UNKNOWN
    with pytest.raises(ValueError):
        fleet.add([device()])


def test_pushes_before_the_poll_make_one_poll_and_offline_refuses() -> None:
    sink = RecordingSink()
    clock = ManualClock()
    with Fleet(clock, sink, FleetParams(checkin_delay_ms=5_000)) as fleet:
        d = device()
        fleet.add([d])
        assert all(fleet.deliver(push()) for _ in range(5))
        fleet.scheduler.wait_idle()
        clock.advance(5_000)
        fleet.scheduler.wait_idle()
        fleet.go_offline(d)
        fleet.scheduler.run_sync(lambda: None)
        assert fleet.deliver(push()) is False
        stats = fleet.stats()
    assert [e["raw_message_type"] for e in sink.events] == ["Idle"]
    assert d.pushes_received == 5 and stats.refused_offline == 1
    assert stats.receptions[Reception.ANSWERED.value] == 5


def test_schedules_bring_devices_back_and_unenroll_checks_out() -> None:
    sink = RecordingSink()
    clock = ManualClock()
    with Fleet(clock, sink) as fleet:
        d = device()
        fleet.add([d])
        fleet.go_offline(d)
        fleet.schedule_online(d, clock.now_ms() + H)
        fleet.scheduler.wait_idle()
        assert fleet.deliver(push()) is False
        clock.advance(H - 1)
        fleet.scheduler.wait_idle()
        assert not d.online
        clock.advance(1)
        fleet.scheduler.wait_idle()
        assert d.online and fleet.deliver(push()) is True
        clock.advance(fleet.params.checkin_delay_ms)  # the poll
        fleet.scheduler.wait_idle()
        fleet.unenroll(d, checkout=True)
        fleet.scheduler.run_sync(lambda: None)
        assert fleet.deliver(push()) is True
        stats = fleet.stats()
    assert [e["raw_message_type"] for e in sink.of("UDID-1")] == ["Idle", "CheckOut"]
    assert stats.receptions[Reception.NOT_ENROLLED.value] == 1 and stats.checkins_sent == 2


def test_scheduler_runs_timers_in_simulated_time_never_early() -> None:
    """Timers fire when simulated time reaches them, in order, and not one millisecond before:
    the test moves a manual clock and waits for the scheduler to be idle, so the verdict does
    not depend on how fast the machine is."""
    clock = ManualClock()
    fired: list[tuple[str, int]] = []
    with Scheduler(clock) as scheduler:
        start = clock.now_ms()
        scheduler.call_at(start + 2 * H, lambda: fired.append(("2h", clock.now_ms())))
        scheduler.call_later(1 * H, lambda: fired.append(("1h", clock.now_ms())))
        scheduler.wait_idle()
        clock.advance(H - 1)
        scheduler.wait_idle()
        assert fired == []
        clock.advance(1)
        scheduler.wait_idle()
        assert fired == [("1h", start + H)]
        clock.advance(H - 1)
        scheduler.wait_idle()
        assert fired == [("1h", start + H)]
        clock.advance(5 * H)  # late is fine: it runs at once, once
        scheduler.wait_idle()
    assert fired == [("1h", start + H), ("2h", start + 7 * H - 1)]


def test_allocate_gives_exact_counts() -> None:
    counts = allocate(10, {Cause.HEALTHY: 0.55, Cause.OFFLINE: 0.25, Cause.WIPED: 0.2,
                           Cause.WRONG_TOPIC: 0.0})
    assert counts == {Cause.HEALTHY: 6, Cause.OFFLINE: 2, Cause.WIPED: 2}  # tie: by name
    assert sum(allocate(10_001, {c: 1.0 for c in Cause}).values()) == 10_001
    with pytest.raises(ValueError):
        allocate(3, {Cause.HEALTHY: 0})


def test_scenarios_are_deterministic_with_truth_per_enrollment() -> None:
    spec = ScenarioSpec(900, {"acme": TOPIC, "globex": TOPIC + "2"},
                        {c: 1.0 for c in Cause}, seed=3)
    a = build_scenario(spec, Clock(), RecordingSink())
    b = build_scenario(spec, Clock(), RecordingSink())
    c = build_scenario(ScenarioSpec(900, spec.tenants, spec.shares, seed=4), Clock(),
                       RecordingSink())
    assert a.truth == b.truth and a.truth != c.truth
    assert {cause: len(a.by_cause(cause)) for cause in Cause} == {cause: 100 for cause in Cause}
    expected = a.expected_by_enrollment()
    assert len(expected) == 1000  # 100 stale-magic devices have two records
    for t in a.truth:
        assert expected[t.enrollment_id] == t.cause.diagnosis
        if t.cause is Cause.STALE_MAGIC:
            assert expected[t.current_enrollment_id] == ANSWERED != t.enrollment_id
        if t.cause is Cause.WRONG_TOPIC:
            assert t.topic == a.retired_topics[t.tenant] != spec.tenants[t.tenant]
        else:
            assert t.topic == spec.tenants[t.tenant]
