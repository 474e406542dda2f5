"""SIGTERM in the middle of the start-up work (the check-ins' replay, the state's restore): the
correlator stops at once and exits cleanly instead of finishing it first."""

from __future__ import annotations

import subprocess

import pytest

from services.common.admin import create_topics
from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.correlator import changelog
from services.correlator.pending import LANE_PRIORITY, PENDING, Entry
from services.devstack.procs import free_port
from tests.correlator.harness import TOPIC_A, Correlator

pytestmark = pytest.mark.kafka

#: Enough records that reading them takes seconds even on a fast machine (~16 s for the
#: check-ins on the 2-core test machine).
RECORDS = 400_000


def fill_checkins(kafka: KafkaSettings, topics: Topics, clock: Clock) -> None:
    event = {"event_id": "e", "enrollment_id": "E1", "tenant": "acme",
             "message_type": "COMMAND_REPORT", "raw_message_type": "", "udid": "E1",
             "topic": None, "token_hex": None, "push_magic": None, "command_uuid": None,
             "status": None, "occurred_at": clock.now_ms(), "source": "sim"}
    value = AvroSerde().encode("CheckinEvent", event)
    producer = ReliableProducer(kafka, name="test-feed", **{"linger.ms": 50})
    for i in range(RECORDS):
        producer.produce(topics.checkins, value, key=f"E{i % 1000}")
    producer.close(60)


def fill_state(kafka: KafkaSettings, topics: Topics, clock: Clock) -> None:
    """One pending push, written over and over (each restores over the one before)."""
    create_topics(kafka, [changelog.STATE], partitions_override=2)
    state_topic = f"{kafka.topic_prefix}{changelog.STATE.name}"
    now = clock.now_ms()
    entry = Entry(PENDING, "E1", "req-1", "acme", TOPIC_A, "ab" * 32, "m-E1", None, now,
                  now - 60_000, LANE_PRIORITY, 0)
    value = changelog.encode(entry)
    producer = ReliableProducer(kafka, name="test-feed", **{"linger.ms": 50})
    for i in range(RECORDS):
        producer.produce(state_topic, value, key=entry.job_id, partition=i % 2)
    producer.close(60)


@pytest.mark.parametrize(("fill", "started", "stopped", "done"), [
    (fill_checkins, "replaying check-ins", "stopped during the check-ins' replay",
     "replayed check-ins"),
    (fill_state, "restoring state partitions", "stopped during the state's restore",
     "restored"),
], ids=["check-in replay", "state restore"])
def test_sigterm_during_start_up_stops_it(
    kafka_settings: KafkaSettings, topics: Topics, fill: object, started: str, stopped: str,
    done: str,
) -> None:
    clock = Clock()
    assert callable(fill)
    fill(kafka_settings, topics, clock)
    proc = Correlator(kafka_settings, clock)
    try:
        proc.start()
        proc.wait_for_log(started)
        assert proc.proc is not None
        proc.proc.terminate()
        try:
            code = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the correlator ignored SIGTERM after {started!r}") from None
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert code == 0, log
    assert stopped in log and done not in log, log


def test_sigterm_while_kafka_does_not_answer_stops_it(kafka_settings: KafkaSettings) -> None:
    """Start-up against a broker address where nothing listens: the wait for Kafka is in short
    calls, so SIGTERM ends it (and librdkafka's complaints are log records, not raw lines)."""
    nowhere = kafka_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    proc = Correlator(nowhere, Clock())
    try:
        proc.start()
        proc.wait_for_log("waiting for Kafka")
        assert proc.proc is not None
        proc.proc.terminate()
        try:
            code = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the correlator ignored SIGTERM while waiting for Kafka") from None
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert code == 0, log
    assert "stopped while waiting for Kafka" in log and "%3|" not in log, log
