"""A killed worker's replacement recovers the registry from Kafka, not from local disk."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from tests.fanout.harness import (
    AT,
    T1,
    Publisher,
    Reader,
    Worker,
    checkin,
    enroll,
    request,
    token,
)

pytestmark = pytest.mark.kafka


def test_registry_survives_a_crash(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    pub = Publisher(kafka_settings)
    registry = Reader(kafka_settings, topics.registry, "DeviceRecord")
    jobs = Reader(kafka_settings, topics.jobs_priority, "PushJob")
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    worker = Worker(kafka_settings, tmp_path)
    events = enroll("E1") + enroll("E2") + [checkin("E2", "CHECK_OUT", AT + 20)] + enroll("E3")
    for event in events:
        pub.record(topics.checkins, "CheckinEvent", event, event["enrollment_id"])
    worker.start()
    try:
        registry.wait(lambda items: {r["enrollment_id"] for r in items
                                     if r["state"] == "ENROLLED"} >= {"E1", "E3"}, worker=worker)
        pub.outcome_410(topics.outcomes, "E3", token("E3"), AT + 100)
        registry.wait(lambda items: any(r["token_dead_since"] for r in items), worker=worker)
        registry.wait(lambda items: any(r["state"] == "CHECKED_OUT" for r in items),
                      worker=worker)
        worker.stop(signal.SIGKILL)

        worker.start()  # a fresh data directory: only Kafka holds the registry
        pub.record(topics.requests, "NotificationRequest", request("r-after-crash"), "acme")
        jobs.wait(lambda items: len(items) >= 1, timeout_s=50, worker=worker)
        outcomes.wait(lambda items: sum(o["state"] == "SKIPPED" for o in items) >= 2,
                      worker=worker)
        assert [(j["enrollment_id"], j["topic"], j["token_hex"]) for j in jobs.settle()] == [
            ("E1", T1, token("E1"))]
        skipped = {o["enrollment_id"]: o["reason"] for o in outcomes.items
                   if o["state"] == "SKIPPED"}
        assert skipped == {"E2": "checked_out", "E3": "token_dead"}
    finally:
        worker.stop()
        for reader in (registry, jobs, outcomes):
            reader.close()
