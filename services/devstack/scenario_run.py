"""One scenario run: a fleet with a known mix of causes through the whole pipeline, scored.

Shared by the demo, the pipeline test (a small fleet, every cause) and the accuracy benchmark
(10,000 devices). Enrollment-race devices enroll last, right before the request, because the
race is about a push that arrives just after enrollment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.devstack.pipeline import Pipeline
from services.devstack.tracker import OutcomeTracker
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.fleet import Cause, Scenario
from services.sim.fleet.accuracy import Confusion, verdicts

#: Causes whose diagnosis the server can observe (its own evidence), bar >= 99 %.
OBSERVABLE = ("unenrolled", "wrong_topic", "stale_token", "stale_push_magic", "enrollment_race")


@dataclass
class AccuracyResult:
    confusion: Confusion
    missing: list[str]
    doubled: dict[str, list[str]]
    seconds: float
    flag_lateness_ms: list[float]
    request_ids: list[str]


def run_accuracy(
    pipeline: Pipeline, scenario: Scenario, tracker: OutcomeTracker, timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> AccuracyResult:
    """Enroll, publish requests for every enrollment, wait for every verdict.

    `progress(done, total)` is called about twice a second while verdicts arrive.
    """
    t0 = time.monotonic()
    expected = scenario.expected_by_enrollment()
    racing = {t.enrollment_id for t in scenario.truth if t.cause is Cause.ENROLLMENT_RACE}
    early = [d for d in scenario.devices if d.cause is not Cause.ENROLLMENT_RACE]
    scenario.fleet.enroll(early, timeout_s)
    if not pipeline.wait_registry(set(expected) - racing, timeout_s):
        raise AssertionError("registry did not catch up\n" + pipeline.logs())
    publisher = PushPublisher(pipeline.kafka)
    requests = {publisher.publish(PushRequest(
        tenant=tenant, initiator="admin", command_type="apply_policies",
        enrollment_ids=sorted(e for e, t in _tenant_of(scenario).items()
                              if t == tenant and e not in racing)))
        for tenant in scenario.spec.tenants}
    # A server pushes a new enrollment at once (initial commands): the race devices enroll now,
    # and their push follows on the priority lane as soon as the registry knows them.
    scenario.fleet.enroll(scenario.by_cause(Cause.ENROLLMENT_RACE), timeout_s)
    if not pipeline.wait_registry(racing, timeout_s, interval_s=0.05):
        raise AssertionError("registry did not catch up\n" + pipeline.logs())
    requests |= {publisher.publish(PushRequest(
        tenant=tenant, initiator="user", command_type="install_profile",
        enrollment_ids=sorted(e for e, t in _tenant_of(scenario).items()
                              if t == tenant and e in racing)))
        for tenant in scenario.spec.tenants}
    got: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(got) < len(expected):
        got = {}
        for request_id in requests:
            got.update(verdicts(tracker.accounting(request_id)))
        if progress is not None:
            progress(len(got), len(expected))
        time.sleep(0.5)
    doubled: dict[str, list[str]] = {}
    for request_id in requests:
        doubled.update(tracker.accounting(request_id).doubled())
    _, alerts = tracker.snapshot()
    lateness = [a["flagged_at"] - a["deadline_at"] for a in alerts]
    return AccuracyResult(Confusion.of(expected, got), sorted(set(expected) - set(got)), doubled,
                          time.monotonic() - t0, lateness, sorted(requests))


def _tenant_of(scenario: Scenario) -> dict[str, str]:
    """Every enrollment id of the fleet (both records of a stale-magic device) -> its tenant."""
    out = {}
    for t in scenario.truth:
        out[t.enrollment_id] = out[t.current_enrollment_id] = t.tenant
    return out
