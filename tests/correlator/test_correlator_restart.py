"""SIGKILL mid-run, restart: every push still gets exactly one verdict."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from tests.correlator.harness import Correlator, Feed, Reader, verdicts

pytestmark = pytest.mark.kafka

N = 200


def test_kill_and_restart_loses_and_doubles_no_verdict(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    alerts = Reader(kafka_settings, topics.alerts, "UnansweredPush")
    now = clock.now_ms()
    devices = [f"E{i:03d}" for i in range(N)]
    for e in devices:
        feed.token_update(e, now - 60_000)
    answering = devices[: N // 2]  # the other half stays silent until the deadline
    proc = Correlator(kafka_settings, clock, race_window_ms=4_000, deadline_ms=4_000)
    try:
        proc.start()
        proc.wait_for_log("assigned outcomes partitions")
        for e in devices:
            feed.outcome(e)
        for e in answering[:50]:
            feed.checkin(e)
        outcomes.wait(lambda rs: len(verdicts(rs)) >= 10, what="first verdicts")
        proc.kill()  # mid-run: some answered, none past the deadline yet
        for e in answering[50:]:
            feed.checkin(e)  # contacts while the correlator is down
        proc.start()
        outcomes.wait(lambda rs: len({r["job_id"] for r in verdicts(rs)}) >= N, timeout_s=30,
                      what="all verdicts")
        time.sleep(2.0)  # a doubled verdict would show up now
        outcomes.poll()
        alerts.wait(lambda rs: len({r["job_id"] for r in rs}) >= N // 2, what="alerts")
    finally:
        proc.stop()
        outcomes.close()
        alerts.close()
    v = verdicts(outcomes.records)
    counts = Counter(r["job_id"] for r in v)
    assert len(counts) == N and max(counts.values()) == 1, counts.most_common(3)
    states = {r["enrollment_id"]: r["state"] for r in v}
    assert all(states[e] == "ANSWERED" for e in answering)
    assert all(states[e] == "UNANSWERED" for e in devices[N // 2:])
    assert {r["enrollment_id"] for r in alerts.records} == set(devices[N // 2:])


def test_a_refused_write_stops_the_correlator_before_its_offset_is_stored(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """A record Kafka can never accept (here: larger than the producer allows) is a
    configuration error: the correlator stops with it, and the outcome it came from is read
    again after the restart, so its push is still judged."""
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    now = clock.now_ms()
    # Every text at its limit (services/common/limits.py): a state entry over 1,000 bytes.
    e2 = "E2-" + "x" * 250
    feed.token_update("E1", now - 60_000)
    feed.token_update(e2, now - 60_000, udid="E2")
    proc = Correlator(kafka_settings, clock)
    proc.env["MDMPUSH_KAFKA_PRODUCER_OVERRIDES"] = '{"message.max.bytes": 1000}'
    group = proc.env["MDMPUSH_CORRELATOR_GROUP_ID"]
    try:
        proc.start()
        proc.wait_for_log("assigned outcomes partitions")
        feed.outcome("E1")
        feed.checkin("E1")
        outcomes.wait(lambda rs: len(verdicts(rs)) == 1, what="the first verdict")
        # Its state entry is larger than the producer's limit: refused before queueing.
        feed.outcome(e2, request="r" * 120, push_magic="M" * 256, token_hex="ab" * 100,
                     topic="com.apple.mgmt." + "t" * 240, apns_id="a" * 128)
        assert proc.proc is not None
        assert proc.proc.wait(20) == 1
        outcomes.wait(lambda rs: any(r["enrollment_id"] == e2 for r in rs), what="E2's SENT")
        big = next(m for m in outcomes.messages if m.key() == e2.encode())
        offset = big.offset()
        assert offset is not None
        assert committed_offset(kafka_settings, group, topics.outcomes, big.partition()) <= offset
        del proc.env["MDMPUSH_KAFKA_PRODUCER_OVERRIDES"]
        proc.start()
        feed.checkin(e2, udid="E2")
        outcomes.wait(lambda rs: any(r["enrollment_id"] == e2 for r in verdicts(rs)),
                      what="the verdict of the push that stopped the first run")
    finally:
        proc.stop()
        outcomes.close()
    assert "correlator stopped: Kafka refused a record" in proc.log.read_text()
    assert Counter(r["job_id"] for r in verdicts(outcomes.records)) == {
        "req-1/E1": 1, f"{'r' * 120}/{e2}": 1}


def committed_offset(kafka: KafkaSettings, group: str, topic: str, partition: int | None) -> int:
    consumer = Consumer(kafka.consumer_config(group), logger=client_logger("test"))
    try:
        (tp,) = consumer.committed([TopicPartition(topic, partition or 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()
