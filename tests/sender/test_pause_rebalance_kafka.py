"""A partition the sender paused is read again after a rebalance gives it back, on a real broker.

librdkafka keeps a partition's pause flag through an eager rebalance, also when the partition is
assigned back to the same member: a sender that forgot its pause reasons at the revoke without
resuming never read that partition again (found under a flood with two senders: whole shards of
a certificate never pushed). The in-memory twin (services/common/kafka/memory.py) now keeps a
pause the same way; this test pins the behaviour it copies and the sender's answer to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services.common.kafka.io import ConfluentKafkaIO, Partition, Record
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from services.sender.pauses import PartitionPauses, PauseReason

pytestmark = pytest.mark.kafka

TIMEOUT_S = 90.0


def _until(done: Callable[[], bool], poll: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {TIMEOUT_S:.0f} s: {what}")
        poll()


def test_a_paused_partition_given_back_by_a_rebalance_is_read_again(
    kafka_settings: KafkaSettings,
) -> None:
    topic = f"{kafka_settings.topic_prefix}pause-rebalance"
    admin = AdminClient(kafka_settings.admin_config(), logger=client_logger("test"))
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    group = f"{kafka_settings.topic_prefix}pause-group"
    io = ConfluentKafkaIO(kafka_settings, group_id=group, name="pause-test",
                          consumer_defaults={"auto.offset.reset": "earliest"})
    pauses = PartitionPauses(io)
    rebalances: list[tuple[str, list[Partition]]] = []

    def revoked(partitions: list[Partition]) -> None:
        rebalances.append(("revoke", partitions))
        for partition in partitions:
            pauses.forget(partition)

    io.subscribe([topic], on_assign=lambda ps: rebalances.append(("assign", ps)),
                 on_revoke=revoked, on_committed=lambda _err, _failed: None)
    got: list[Record] = []

    def consume() -> None:
        got.extend(r for r in io.consume(100, 0.2) if r.error() is None)

    other = Consumer(kafka_settings.consumer_config(group, **{"client.id": "pause-test-other"}),
                     logger=client_logger("pause-test-other"))
    try:
        _until(lambda: any(kind == "assign" and len(ps) == 2 for kind, ps in rebalances),
               consume, "the first member assigned both partitions")
        for partition in [(topic, 0), (topic, 1)]:
            pauses.pause(partition, PauseReason.BUFFER_FULL)
        seen = len(rebalances)

        other.subscribe([topic])  # joins: both members rebalance ...
        def both() -> None:
            consume()
            other.poll(0.1)

        _until(lambda: any(kind == "assign" for kind, _ in rebalances[seen:]),
               both, "a rebalance after the second member joined")
        seen = len(rebalances)
        other.close()  # ... and leaves: every partition comes back to the first
        _until(lambda: any(kind == "assign" and len(ps) == 2 for kind, ps in rebalances[seen:]),
               consume, "both partitions assigned back")

        producer = Producer(kafka_settings.producer_config(), logger=client_logger("test"))
        for n in range(10):
            producer.produce(topic, f"r{n}".encode(), partition=n % 2)
        assert producer.flush(30) == 0
        _until(lambda: len(got) >= 10, consume, f"10 records read again (read: {len(got)})")
        assert sorted(r.value() or b"" for r in got) == sorted(f"r{n}".encode() for n in range(10))
    finally:
        io.close()

