"""Shared confluent-kafka plumbing: producers that confirm delivery, and the dead-letter writer.

Every consumer of this project stores an offset only after what it produced for that record is
acknowledged by Kafka; `DeliveryTracker` is how a loop learns that without blocking on flush().
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str | bytes | None]]

#: librdkafka's "no partition given": the partitioner of the key chooses.
PARTITION_UA = -1

#: On the sender's FAILED 410 outcomes (APNs: the token is no longer valid). The fan-out reads
#: only the outcomes that carry it (services/fanout/dead_tokens.py).
TOKEN_DEAD_HEADER = "mdmpush.token_dead"


def make_producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """An idempotent producer configured from settings."""
    return Producer(settings.producer_config(**overrides))


def assign_from_beginning(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, int]:
    """Assign every partition of `topic` from its beginning (none if the topic does not exist);
    returns partition -> end offset of the non-empty ones: once each is read up to its end,
    everything the topic held at the call has been read (the config readers' "loaded")."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    partitions = list(metadata.partitions) if metadata is not None else []
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    ends: dict[int, int] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        if high > low:
            ends[p] = high
    return ends


class DeliveryError(RuntimeError):
    """Kafka refused or lost a record the caller needed acknowledged."""


def produce_sync(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    headers: Headers | None = None,
    timeout_s: float = 30.0,
    partition: int | None = None,
) -> None:
    """Produce one record and wait for its acknowledgement (CLI, SDK, gateway; not hot paths).

    `partition` None: the partitioner of the key chooses."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(topic, value=value, key=key, headers=list(headers or []),
                     on_delivery=on_delivery,
                     partition=PARTITION_UA if partition is None else partition)
    remaining = producer.flush(timeout_s)
    if remaining:
        raise DeliveryError(f"{remaining} record(s) to {topic} not acknowledged in {timeout_s}s")
    if errors:
        raise DeliveryError(f"Kafka refused a record to {topic}: {errors[0]}")


def dead_letter_headers(msg: Message, reason: str) -> list[tuple[str, bytes]]:
    """Where a poison record came from and why it was set aside (kept with the original bytes)."""
    return dead_letter_headers_at(msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                                  reason)


def dead_letter_headers_at(
    topic: str, partition: int, offset: int, reason: str
) -> list[tuple[str, bytes]]:
    """The same headers from plain coordinates (faust and aiokafka messages are not confluent's)."""
    return [
        ("mdmpush.dlq.reason", reason.encode()[:1000]),
        ("mdmpush.dlq.source.topic", topic.encode()),
        ("mdmpush.dlq.source.partition", str(partition).encode()),
        ("mdmpush.dlq.source.offset", str(offset).encode()),
        ("mdmpush.dlq.at", str(int(time.time() * 1000)).encode()),
    ]
