"""The whole path, healthy fleet: a request for every device ends with every device answering."""

from __future__ import annotations

import pytest

from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, ScenarioSpec
from tests.pipeline.conftest import PipelineFactory
from tests.support.correlator_grace import GRACE_MS


@pytest.mark.kafka
def test_request_for_a_healthy_fleet_is_answered_by_every_device(
    pipeline_factory: PipelineFactory,
) -> None:
    topic = mdm_topic()
    pipeline, scenario, tracker = pipeline_factory(
        ScenarioSpec(devices=60, tenants={"acme": topic}, shares={Cause.HEALTHY: 1.0}),
        env={"correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": "20000",
                            "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS}},
    )
    scenario.enroll_all()
    assert pipeline.wait_registry([t.enrollment_id for t in scenario.truth]), pipeline.logs()
    publisher = PushPublisher(pipeline.kafka)
    request_id = publisher.publish(PushRequest(tenant="acme", target_all=True, initiator="user"))
    assert tracker.wait_terminal(request_id, 60, timeout_s=90), pipeline.logs()
    acc = tracker.accounting(request_id)
    assert {acc.state_of(t.enrollment_id) for t in scenario.truth} == {"ANSWERED"}
    assert acc.doubled() == {}
