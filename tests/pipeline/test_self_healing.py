"""Stale PushMagic on the whole pipeline: flagged, then recovered by the self-healing push that
the correlator schedules 25 simulated hours after the first wrong-magic push (seed behaviour)."""

from __future__ import annotations

import pytest

from services.common.clock import Clock
from services.devstack.procs import wait_for
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, ScenarioSpec
from tests.pipeline.conftest import PipelineFactory

SPEED = 7200.0  # 25 simulated hours in 12.5 real seconds
HOUR_MS = 3_600_000
#: Longest wait for an event: a fail-safe returned from as soon as it happens, not a bound.
WAIT_S = 180.0


@pytest.mark.kafka
def test_stale_magic_devices_heal_after_25_simulated_hours(
    pipeline_factory: PipelineFactory,
) -> None:
    spec = ScenarioSpec(devices=12, tenants={"acme": mdm_topic()},
                        shares={Cause.STALE_MAGIC: 2.0, Cause.HEALTHY: 1.0}, seed=9)
    # At this speed one real second is two simulated hours: deadlines are set in those terms.
    pipeline, scenario, tracker = pipeline_factory(
        spec, clock=Clock(speed=SPEED),
        env={"correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": str(6 * HOUR_MS),
                            "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(2 * HOUR_MS),
                            "MDMPUSH_CORRELATOR_TIMER_TICK_MS": str(HOUR_MS // 20),
                            # Silent-device care off: at this speed its day-long defaults pass
                            # in seconds, and a re-arm push or an INACTIVE mark is not this test.
                            "MDMPUSH_CORRELATOR_REARM_AFTER_MS": str(1000 * 24 * HOUR_MS),
                            "MDMPUSH_CORRELATOR_INACTIVE_AFTER_MS": str(1000 * 24 * HOUR_MS)}},
    )
    scenario.enroll_all()
    stale = scenario.by_cause(Cause.STALE_MAGIC)
    truth = {t.udid: t for t in scenario.truth}
    ids = {t.enrollment_id for t in scenario.truth} | {
        t.current_enrollment_id for t in scenario.truth}
    assert pipeline.wait_registry(ids), pipeline.logs()
    # The server pushes the stale records only: a correct-magic push (to the current record)
    # within 25 h would reset the device's recorded time, exactly as the seed describes.
    stale_ids = [truth[d.udid].enrollment_id for d in stale]
    request_id = PushPublisher(pipeline.kafka).publish(
        PushRequest(tenant="acme", enrollment_ids=stale_ids, initiator="admin"))
    assert tracker.wait_terminal(request_id, len(stale_ids), WAIT_S), pipeline.logs()
    acc = tracker.accounting(request_id)
    assert {acc.state_of(e) for e in stale_ids} == {"UNANSWERED"}
    _, alerts = tracker.snapshot()
    flagged = {a["enrollment_id"]: a for a in alerts}
    assert {flagged[e]["diagnosis"] for e in stale_ids} == {"STALE_PUSH_MAGIC"}
    assert all("self-healing" in flagged[e]["action"] for e in stale_ids)
    # Flagged by the deadline, never before it (simulated time, stamped by the correlator; how
    # early in real time that is depends on the machine, so it is not asserted).
    for e in stale_ids:
        alert = flagged[e]
        assert alert["deadline_at"] - alert["pushed_at"] == 6 * HOUR_MS
        assert alert["flagged_at"] >= alert["deadline_at"]

    assert wait_for(lambda: all(d.self_heals >= 1 for d in stale), timeout_s=WAIT_S), (
        [d.self_heals for d in stale], pipeline.logs())

    def healed_by_a_push_25_hours_later(e: str) -> bool:
        outcomes, _ = tracker.snapshot()
        sent = [o for o in outcomes if o["enrollment_id"] == e and o["state"] == "SENT"]
        first = min(o["at"] for o in sent if o["repush"] == 0)
        return any(o["repush"] >= 1 and o["at"] >= first + 25 * HOUR_MS for o in sent)

    # The device heals as the push arrives; the sender's SENT outcome follows a moment later.
    assert wait_for(lambda: all(healed_by_a_push_25_hours_later(e) for e in stale_ids), WAIT_S)
