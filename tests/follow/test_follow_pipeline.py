"""Following a request for a whole tenant through the real pipeline (fan-out, sender, APNs
simulator, correlator, simulated fleet): `track()` ends exactly when every enrollment of the
tenant has its one terminal state, and agrees with the pipeline's own accounting."""

from __future__ import annotations

from collections import Counter

import pytest

from services.common.registry_view import load_registry
from services.sdk.publisher import PushPublisher, PushRequest
from services.sdk.track import track
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, ScenarioSpec
from tests.pipeline.conftest import PipelineFactory
from tests.support.correlator_grace import GRACE_MS


@pytest.mark.kafka
def test_track_a_tenant_wide_request_to_its_verdicts(pipeline_factory: PipelineFactory) -> None:
    spec = ScenarioSpec(devices=24, tenants={"acme": mdm_topic()}, seed=3,
                        shares={Cause.HEALTHY: 3.0, Cause.OFFLINE: 1.0,
                                Cause.UNENROLLED_CHECKOUT: 1.0})
    pipeline, scenario, tracker = pipeline_factory(
        spec, env={"correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": "8000",
                                  "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS,
                                  "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": "3000"}})
    scenario.enroll_all()
    assert pipeline.wait_registry([t.enrollment_id for t in scenario.truth]), pipeline.logs()
    tenant = {eid for eid, r in load_registry(pipeline.kafka).items() if r["tenant"] == "acme"}

    rid = PushPublisher(pipeline.kafka).publish(
        PushRequest(tenant="acme", target_all=True, initiator="user"))
    seen = list(track(rid, settings=pipeline.kafka, interval_s=0.5, timeout_s=180))

    last = seen[-1]
    assert last.complete, pipeline.logs()
    assert last.targets == len(tenant)
    assert any(not p.complete and p.terminal < len(tenant) for p in seen)  # it was live
    assert tracker.wait_terminal(rid, len(tenant), timeout_s=30)
    accounting = tracker.accounting(rid)
    assert accounting.missing(tenant) == [] and accounting.doubled() == {}
    assert last.by_state == dict(Counter(accounting.state_of(t) for t in tenant))
    assert last.by_state.get("ANSWERED", 0) >= 1
    assert last.reasons.get("UNANSWERED", {}).get("device_unreachable", 0) >= 1

    # Explicit targets, one of them unknown to the registry: exactly those, nothing else.
    healthy = sorted(t.enrollment_id for t in scenario.truth if t.cause is Cause.HEALTHY)[:3]
    explicit = PushPublisher(pipeline.kafka).publish(
        PushRequest(tenant="acme", enrollment_ids=[*healthy, "NOT-ENROLLED"], initiator="user"))
    final = list(track(explicit, settings=pipeline.kafka, interval_s=0.5, timeout_s=120))[-1]
    assert final.complete, pipeline.logs()
    assert final.by_state == {"ANSWERED": 3, "SKIPPED": 1}
    assert final.reasons["SKIPPED"] == {"unknown_enrollment": 1}
