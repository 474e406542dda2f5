"""Read a topic from a point in time: up to the end it had when the read began, or live.

`mdmpush dlq --since` and request tracking read only the part of a topic that can matter (the
DLQ's last hours, the outcomes since a request was made) instead of scanning from the beginning:
`offsets_for_times` turns the time into one start offset per partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.common.errors import TopicReadError
from services.common.kafka.reader import reader_consumer
from services.common.settings import KafkaSettings

BATCH = 1000


def assign_from_time(
    consumer: Consumer, topic: str, since_ms: int | None, timeout_s: float
) -> dict[int, tuple[int, int]]:
    """Assign every partition of `topic` at its first record written at or after `since_ms`
    (the beginning when None, the end when no record is that new); returns partition ->
    (start offset, end offset at the call)."""
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise TopicReadError(f"topic {topic} cannot be read (is MDMPUSH_KAFKA_TOPIC_PREFIX "
                                 "right?)")
        partitions = sorted(meta.partitions)
        found: dict[int, int] = {}
        if since_ms is not None:
            asked = [TopicPartition(topic, p, since_ms) for p in partitions]
            for tp in consumer.offsets_for_times(asked, timeout=timeout_s):
                found[tp.partition] = tp.offset
        positions: dict[int, tuple[int, int]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=timeout_s)
            start = found.get(p, low)
            positions[p] = (high if start < 0 else max(start, low), high)
    except KafkaException as exc:
        raise TopicReadError(f"Kafka did not answer about {topic}: {exc.args[0]}") from exc
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in positions.items()])
    return positions


def read_since(
    kafka: KafkaSettings, topic: str, since_ms: int | None = None, *, timeout_s: float = 60.0,
    name: str = "reader",
) -> Iterator[Message]:
    """Every record of `topic` written at or after `since_ms` (all when None) that is there
    when called, in per-partition offset order; no group, nothing committed."""
    consumer = reader_consumer(kafka, name)
    try:
        positions = assign_from_time(consumer, topic, since_ms, timeout_s)
        ends = {p: high for p, (start, high) in positions.items() if high > start}
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TopicReadError(f"reading {topic} did not finish within {timeout_s:.0f}s")
            batch = consumer.consume(BATCH, 0.2)
            for msg in batch:
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                end = ends.get(partition)
                if end is None or offset >= end:
                    continue
                yield msg
                if offset + 1 >= end:
                    del ends[partition]
            if not batch:  # the last offsets may hold no record (compaction, markers)
                for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:
                        del ends[tp.partition]
    except KafkaException as exc:
        raise TopicReadError(f"reading {topic}: {exc.args[0]}") from exc
    finally:
        consumer.close()
