"""A worker that must not go on (the DLQ limit tripped) stops without committing what it read:
its replacement reads the record again, so nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.fanout.app import EXIT_UNSAFE_TO_COMMIT
from tests.fanout.harness import Publisher, Reader, Worker, enroll

pytestmark = pytest.mark.kafka

POISON = b"not avro at all"


def test_the_dlq_limit_stops_the_worker_and_the_record_is_read_again(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    pub = Publisher(kafka_settings)
    registry = Reader(kafka_settings, topics.registry, "DeviceRecord")
    dlq = Reader(kafka_settings, topics.dlq, None)
    # No dead letter at all is allowed: the first poison record trips the limit.
    worker = Worker(kafka_settings, tmp_path, MDMPUSH_KAFKA_DLQ_MAX_RATIO="0",
                    MDMPUSH_KAFKA_DLQ_MIN_RECORDS="1")
    for event in enroll("E1"):
        pub.record(topics.checkins, "CheckinEvent", event, "E1")
    worker.start()
    try:
        registry.wait(lambda items: any(r["state"] == "ENROLLED" for r in items), worker=worker)
        pub.raw(topics.checkins, POISON, "E1")
        assert worker.proc is not None
        assert worker.proc.wait(60) == EXIT_UNSAFE_TO_COMMIT, worker.log_tail()
        assert "stops without committing" in worker.log_tail()
        assert dlq.settle(1.0) == []  # refused before writing: the record is still only there

        for name in ("MDMPUSH_KAFKA_DLQ_MAX_RATIO", "MDMPUSH_KAFKA_DLQ_MIN_RECORDS"):
            del worker.env[name]
        worker.start()
        dead = dlq.wait(lambda items: len(items) >= 1, worker=worker, timeout_s=90)
        assert [m.value() for m in dead] == [POISON]
    finally:
        worker.stop()
        registry.close()
        dlq.close()
