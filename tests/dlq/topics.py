"""What the DLQ tests check on topics: end offsets (nothing produced) and every record."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Message

from services.common.kafka.reader import assign_from_time, read_to_end, reader_consumer
from services.common.settings import KafkaSettings


def end_offsets(kafka: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """Topic -> records ever written to it (sum of its partitions' end offsets)."""
    consumer = reader_consumer(kafka, "test-ends")
    try:
        return {topic: sum(assign_from_time(consumer, topic, None, 10.0).values())
                for topic in topics}
    finally:
        consumer.close()


def read_all(kafka: KafkaSettings, topic: str) -> list[Message]:
    return list(read_to_end(kafka, topic, timeout_s=30.0, name="test-read"))
