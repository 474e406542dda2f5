"""Issue 3's integration test: a fault mix on the real broker and simulator, every target ends in
exactly one terminal state, and the right one for the fault it met."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.common.registry_view import load_registry
from services.devstack.procs import wait_for
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from services.sim.apns.faults import Faults
from services.sim.fleet import Cause, ScenarioSpec
from tests.pipeline.conftest import PipelineFactory
from tests.support.correlator_grace import GRACE_MS

RETRIES = (300, 1000, 2000)


@pytest.mark.kafka
def test_fault_mix_ends_in_one_right_terminal_state_per_target(
    pipeline_factory: PipelineFactory,
) -> None:
    cert_a, cert_b, cert_c = mdm_topic(), mdm_topic(), mdm_topic()
    faults = Faults(share_500=0.08, share_503=0.05, share_reset=0.02, seed=3)
    spec = ScenarioSpec(
        devices=300, tenants={"acme": (cert_a, cert_b), "globex": cert_c},
        shares={Cause.HEALTHY: 0.9, Cause.UNENROLLED_CHECKOUT: 0.05, Cause.WRONG_TOPIC: 0.05},
        seed=11,
    )
    pipeline, scenario, tracker = pipeline_factory(
        spec, faults=faults, retry_delays_ms=RETRIES,
        simulator={"token_rate_limit": 1, "token_rate_window_s": 3.0},
        env={
            # The unrecorded window off: at 300 devices it lets 20 pushes out per acknowledgement
            # cycle, and under load the repeated push below then reaches APNs after the
            # simulator's 3 s per-token window, so its 429 case is not met (the window has its
            # own tests: tests/sender/test_sender_loop.py).
            "sender": {"MDMPUSH_SENDER_BREAKER_S": "1", "MDMPUSH_SENDER_DEFAULT_MAX_ATTEMPTS": "8",
                       "MDMPUSH_SENDER_UNRECORDED_MIN": "0"},
            "correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": "20000",
                           "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS,
                           "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": "8000"},
        },
    )
    healthy = scenario.by_cause(Cause.HEALTHY)
    dead_tokens = {d.token_hex for d in healthy[:15]}
    faults.revoke(topics=[cert_b])  # until restored below: 403, breaker, retries, none burned
    scenario.enroll_all()
    truth = {t.enrollment_id: t for t in scenario.truth}
    assert pipeline.wait_registry(truth), pipeline.logs()
    # After their TokenUpdates (a 410 older than the token would say nothing about it).
    faults.unregister(dead_tokens)

    publisher = PushPublisher(pipeline.kafka)
    acme = publisher.publish(PushRequest(tenant="acme", target_all=True, initiator="admin"))
    globex_ids = [t.enrollment_id for t in scenario.truth if t.tenant == "globex"]
    globex = publisher.publish(PushRequest(tenant="globex", enrollment_ids=[*globex_ids,
                                           "UNKNOWN-ENROLLMENT"], initiator="user"))
    # The same devices pushed again at once: APNs answers 429 (too many pushes to one token).
    again_ids = [t.enrollment_id for t in scenario.truth
                 if t.tenant == "globex" and t.cause is Cause.HEALTHY
                 and t.token_hex not in dead_tokens][:20]
    again = publisher.publish(PushRequest(tenant="globex", enrollment_ids=again_ids))
    time.sleep(4)
    faults.revoked_topics = faults.revoked_topics - {cert_b}  # certificate renewed

    acme_targets = [e for e, t in truth.items() if t.tenant == "acme"]
    assert tracker.wait_terminal(acme, len(acme_targets), 120), pipeline.logs()
    assert tracker.wait_terminal(globex, len(globex_ids) + 1, 60), pipeline.logs()
    assert tracker.wait_terminal(again, len(again_ids), 60), pipeline.logs()

    def expected(enrollment_id: str) -> tuple[str, str | None]:
        device = truth[enrollment_id]
        if device.cause is Cause.UNENROLLED_CHECKOUT:
            return "SKIPPED", "checked_out"
        if device.cause is Cause.WRONG_TOPIC:
            return "FAILED", "WrongTopic"
        if device.token_hex in dead_tokens:
            return "FAILED", "Unregistered"
        return "ANSWERED", None

    for request_id, targets in ((acme, acme_targets), (globex, globex_ids)):
        acc = tracker.accounting(request_id)
        assert acc.doubled() == {}
        got = {e: (acc.terminal[e][0]["state"], acc.terminal[e][0]["reason"]
                   if acc.terminal[e][0]["state"] != "ANSWERED" else None) for e in targets}
        assert got == {e: expected(e) for e in targets}
    assert tracker.accounting(globex).state_of("UNKNOWN-ENROLLMENT") == "SKIPPED"
    assert {tracker.accounting(again).state_of(e) for e in again_ids} == {"ANSWERED"}

    outcomes, _ = tracker.snapshot()
    statuses = {o["status"] for o in outcomes if o["state"] == "RETRYING"}
    assert {429, 500, 503} <= statuses, statuses  # every transient fault was met and retried
    # A 403 burns no attempt: the job's next try carries the attempt count the 403 got (a 500
    # before the revocation check may have raised it already: the simulator draws faults first).
    b_tries: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        if o["topic"] == cert_b and o["state"] != "ANSWERED":
            b_tries.setdefault(o["job_id"], []).append(o)
    after_403 = [(tries[i]["attempt"], tries[i + 1]["attempt"])
                 for tries in b_tries.values() for i in range(len(tries) - 1)
                 if tries[i]["status"] == 403]
    assert after_403 and all(before == then for before, then in after_403), after_403
    assert not [o for o in outcomes if o["state"] == "DEAD_LETTERED"]
    assert pipeline.sim is not None
    assert pipeline.sim.snapshot().by_status.get(410, 0) >= len(dead_tokens)
    # The sender marks its 410 outcomes; the fan-out reads those and kills the tokens.
    dead_ids = {e for e, t in truth.items() if t.token_hex in dead_tokens}

    def killed() -> set[str]:
        registry = load_registry(pipeline.kafka)
        return {e for e in dead_ids if registry[e]["token_dead_since"] is not None}

    assert wait_for(lambda: killed() == dead_ids, 30), (dead_ids - killed(), pipeline.logs())
