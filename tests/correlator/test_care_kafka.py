"""Care and riders through the real correlator process and broker: the activity topic is what
makes "one re-arm per silence" survive a SIGKILL, and a rider's verdict comes out with its
carrier's."""

from __future__ import annotations

import time

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from tests.correlator.harness import Correlator, Feed, Reader, verdicts

pytestmark = pytest.mark.kafka

#: Real-time clock: re-arm after 2 s of silence; inactivity off until the last phase.
CARE = dict(rearm_after_ms=2_000, rearm_spread_ms=0, inactive_after_ms=0,
            deadline_ms=60_000, race_window_ms=60_000)


def rearms(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return [r for r in records if r["command_type"] == "correlator_rearm"]


def test_one_re_arm_per_silence_survives_a_kill_then_inactive_then_active_again(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    jobs = Reader(kafka_settings, topics.jobs_bulk, "PushJob")
    activity = Reader(kafka_settings, topics.activity, "EnrollmentActivity")
    first = Correlator(kafka_settings, clock, **CARE)
    again = Correlator(kafka_settings, clock, **CARE)
    last = Correlator(kafka_settings, clock, **{**CARE, "inactive_after_ms": 1_000})
    try:
        first.start()
        first.wait_for_log("assigned outcomes partitions")
        for e in ("E1", "E2"):
            feed.token_update(e, clock.now_ms())
        jobs.wait(lambda rs: len(rearms(rs)) >= 2, timeout_s=60, what="re-arms")
        activity.wait(lambda rs: {r["enrollment_id"] for r in rs if r["rearmed_at"]} ==
                      {"E1", "E2"}, timeout_s=30, what="re-arms recorded")
        first.kill()
        # Restarted, both still silent and long past due: the activity topic says they were
        # re-armed for this silence, so no second re-arm.
        again.start()
        again.wait_for_log("assigned outcomes partitions", times=2)
        time.sleep(1.5)  # dozens of care sweeps
        jobs.poll()
        assert len(rearms(jobs.records)) == 2, rearms(jobs.records)
        again.stop()
        # With inactivity on, both are INACTIVE at once; a contact makes E1 ACTIVE again.
        last.start()
        last.wait_for_log("assigned outcomes partitions", times=3)
        activity.wait(lambda rs: {r["enrollment_id"] for r in rs if r["state"] == "INACTIVE"}
                      == {"E1", "E2"}, timeout_s=60, what="INACTIVE")
        feed.checkin("E1")
        activity.wait(lambda rs: rs[-1]["enrollment_id"] == "E1"
                      and rs[-1]["state"] == "ACTIVE", timeout_s=30, what="E1 ACTIVE again")
        jobs.poll()
    finally:
        for proc in (first, again, last):
            proc.stop()
        jobs.close()
        activity.close()
    assert sorted(str(r["enrollment_id"]) for r in rearms(jobs.records)) == ["E1", "E2"]
    assert all(r["lane"] == "BULK" and r["repush"] == 1 for r in rearms(jobs.records))


def test_a_rider_gets_its_carriers_verdict(kafka_settings: KafkaSettings, topics: Topics
                                           ) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    proc = Correlator(kafka_settings, clock, deadline_ms=60_000, race_window_ms=60_000)
    try:
        proc.start()
        proc.wait_for_log("assigned outcomes partitions")
        feed.token_update("E3", clock.now_ms() - 60_000)
        feed.outcome("E3")  # the carrier, req-1/E3
        feed.outcome("E3", request="req-2", state="SKIPPED", reason="coalesced",
                     rides_on="req-1/E3", lane="BULK")
        time.sleep(0.5)
        feed.checkin("E3")
        found = outcomes.wait(lambda rs: len(verdicts(rs)) >= 2, timeout_s=30, what="verdicts")
    finally:
        proc.stop()
        outcomes.close()
    by_job = {r["job_id"]: r for r in verdicts(found)}
    assert by_job["req-1/E3"]["state"] == by_job["req-2/E3"]["state"] == "ANSWERED"
    assert by_job["req-2/E3"]["reason"] == "coalesced onto req-1/E3"
    assert by_job["req-2/E3"]["rides_on"] == "req-1/E3"
