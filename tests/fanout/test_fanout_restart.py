"""A killed worker's replacement recovers the registry from Kafka, not from local disk; the
registry changelog a fan-out from before wrote (JSON values) is read beside its own (Avro)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from services.common.admin import create_topics
from services.common.catalogue import Cleanup, Topics, TopicSpec
from services.common.settings import KafkaSettings
from services.fanout.changelog import to_json
from services.fanout.jobs import registry_partition
from services.fanout.registry import Record, apply_checkin
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

CHANGELOG = "mdmpush-fanout-registry-changelog"
PARTITIONS = 4  # the harness worker's


def _legacy_changelog(kafka: KafkaSettings, pub: Publisher, eid: str) -> None:
    """`eid` enrolled, as a fan-out from before the Avro changelog wrote it: a JSON value, in
    the changelog partition of its enrollment (the topic created as faust creates it)."""
    create_topics(kafka, [TopicSpec(CHANGELOG, "faust table changelog", "enrollment id",
                                    PARTITIONS, Cleanup.COMPACT)])
    record: Record | None = None
    for event in enroll(eid):
        record = apply_checkin(record, event, AT + 15) or record
    pub.producer.produce_sync(f"{kafka.topic_prefix}{CHANGELOG}", to_json(record),
                              to_json(eid), partition=registry_partition(eid, PARTITIONS))

pytestmark = pytest.mark.kafka


def test_registry_survives_a_crash(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    pub = Publisher(kafka_settings)
    registry = Reader(kafka_settings, topics.registry, "DeviceRecord")
    jobs = Reader(kafka_settings, topics.jobs_priority, "PushJob")
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    worker = Worker(kafka_settings, tmp_path)
    registry_raw = Reader(kafka_settings, topics.registry, None)
    readers = [registry_raw]
    _legacy_changelog(kafka_settings, pub, "E0")  # known only from the old JSON changelog
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
        # E0's JSON record was read: a check-in of it changes it (and writes it in Avro).
        pub.record(topics.checkins, "CheckinEvent",
                   checkin("E0", "COMMAND_REPORT", AT + 40, status="Idle"), "E0")
        registry.wait(lambda items: any(r["enrollment_id"] == "E0"
                                        and r["last_contact_at"] == AT + 40
                                        and r["token_hex"] == token("E0") for r in items),
                      worker=worker)
        worker.stop(signal.SIGKILL)

        worker.start()  # a fresh data directory: only Kafka holds the registry
        pub.record(topics.requests, "NotificationRequest", request("r-after-crash"), "acme")
        jobs.wait(lambda items: len(items) >= 2, timeout_s=50, worker=worker)
        outcomes.wait(lambda items: sum(o["state"] == "SKIPPED" for o in items) >= 2,
                      worker=worker)
        assert sorted((j["enrollment_id"], j["topic"], j["token_hex"]) for j in jobs.settle()) == [
            ("E0", T1, token("E0")), ("E1", T1, token("E1"))]
        skipped = {o["enrollment_id"]: o["reason"] for o in outcomes.items
                   if o["state"] == "SKIPPED"}
        assert skipped == {"E2": "checked_out", "E3": "token_dead"}
        # The changelog: E0's JSON record, then for every change the registry topic's bytes.
        changelog = Reader(kafka_settings, f"{kafka_settings.topic_prefix}{CHANGELOG}", None)
        readers.append(changelog)
        written = [(m.key(), m.value()) for m in changelog.settle(0.5)]
        e0 = [value for key, value in written if key == b'"E0"']
        assert len(e0) == 2 and e0[0].startswith(b"{") and not e0[1].startswith(b"{")
        published = {(to_json(m.key().decode()), m.value()) for m in registry_raw.settle(0.5)}
        assert {(key, value) for key, value in written if key != b'"E0"' or value != e0[0]} \
            <= published
    finally:
        worker.stop()
        for reader in (registry, jobs, outcomes, *readers):
            reader.close()
