"""SIGTERM in the middle of the start-up replay: the correlator stops at once, cleanly."""

from __future__ import annotations

import subprocess

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from tests.correlator.harness import Correlator

pytestmark = pytest.mark.kafka

#: Enough check-ins that replaying them takes seconds even on a fast machine.
CHECKINS = 400_000


def test_sigterm_during_the_check_in_replay_stops_it(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    clock = Clock()
    event = {"event_id": "e", "enrollment_id": "E1", "tenant": "acme",
             "message_type": "COMMAND_REPORT", "raw_message_type": "", "udid": "E1",
             "topic": None, "token_hex": None, "push_magic": None, "command_uuid": None,
             "status": None, "occurred_at": clock.now_ms(), "source": "sim"}
    value = AvroSerde().encode("CheckinEvent", event)
    producer = ReliableProducer(kafka_settings, name="test-feed", **{"linger.ms": 50})
    for i in range(CHECKINS):
        producer.produce(topics.checkins, value, key=f"E{i % 1000}")
    producer.close(60)
    proc = Correlator(kafka_settings, clock)
    try:
        proc.start()
        proc.wait_for_log("replaying check-ins")
        assert proc.proc is not None
        proc.proc.terminate()
        try:
            code = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError("the correlator ignored SIGTERM during its replay") from None
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert code == 0, log
    assert "stopped during start-up" in log and "replayed check-ins" not in log, log
