"""One accuracy run: a fleet with a known mix of causes through the whole pipeline.

Shared by the pipeline test (a small fleet, every cause) and `tests/bench/bench_accuracy.py`
(10,000 devices). Enrollment-race devices enroll last, right before the request, because the
race is about a push that arrives just after enrollment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from services.devstack.pipeline import Pipeline
from services.devstack.tracker import OutcomeTracker
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.fleet import Cause, Scenario
from services.sim.fleet.accuracy import Confusion, verdicts

#: Causes whose diagnosis the server can observe (DESIGN.md section 7 evidence), bar >= 99 %.
OBSERVABLE = ("unenrolled", "wrong_topic", "stale_token", "stale_push_magic", "enrollment_race")


@dataclass
class AccuracyResult:
    confusion: Confusion
    missing: list[str]
    doubled: dict[str, list[str]]
    seconds: float
    flag_lateness_ms: list[float]


def run_accuracy(
    pipeline: Pipeline, scenario: Scenario, tracker: OutcomeTracker, timeout_s: float
) -> AccuracyResult:
    t0 = time.monotonic()
    racers = scenario.by_cause(Cause.ENROLLMENT_RACE)
    early = [d for d in scenario.devices if d.cause is not Cause.ENROLLMENT_RACE]
    scenario.fleet.enroll(early, timeout_s)
    expected = scenario.expected_by_enrollment()
    early_ids = {t.enrollment_id for t in scenario.truth if t.cause is not Cause.ENROLLMENT_RACE}
    early_ids |= {t.current_enrollment_id for t in scenario.truth
                  if t.cause is not Cause.ENROLLMENT_RACE}
    if not pipeline.wait_registry(early_ids, timeout_s):
        raise AssertionError("registry did not catch up\n" + pipeline.logs())
    scenario.fleet.enroll(racers, timeout_s)
    racer_ids = {t.enrollment_id for t in scenario.truth if t.cause is Cause.ENROLLMENT_RACE}
    if not pipeline.wait_registry(racer_ids, timeout_s):
        raise AssertionError("registry did not catch up\n" + pipeline.logs())
    publisher = PushPublisher(pipeline.kafka)
    requests = {publisher.publish(PushRequest(tenant=tenant, target_all=True, initiator="user"))
                for tenant in scenario.spec.tenants}
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    for request_id in requests:
        tracker.wait_terminal(request_id, 0, 0)
    while time.monotonic() < deadline and len(got) < len(expected):
        got = {}
        for request_id in requests:
            got.update(verdicts(tracker.accounting(request_id)))
        time.sleep(0.5)
    doubled: dict[str, list[str]] = {}
    for request_id in requests:
        doubled.update(tracker.accounting(request_id).doubled())
    _, alerts = tracker.snapshot()
    lateness = [a["flagged_at"] - a["deadline_at"] for a in alerts]
    return AccuracyResult(Confusion.of(expected, got), sorted(set(expected) - set(got)), doubled,
                          time.monotonic() - t0, lateness)
