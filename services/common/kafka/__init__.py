"""The Kafka plumbing of every service, one copy of each piece.

* `producer`: `ReliableProducer` (the one BufferError loop, every delivery checked,
  `PermanentDeliveryError` for what can never be accepted); `aio`: its asyncio face.
* `reader`: read a topic to the end offsets it had at the call; `compacted`: a compacted topic
  as a dict with a `'*'` fallback key.
* `dead_letter`: the dead-letter writer, its headers and its `DlqLimit`.
* `logs`: librdkafka's log lines through Python logging, one line per outage per client.

The names below the marker are the old module's, kept importable until every caller has moved.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message, Producer

from services.common.kafka.logs import client_logger
from services.common.kafka.producer import (
    PARTITION_UA,
    DeliveryError,
    Headers,
    PermanentDeliveryError,
    ReliableProducer,
    delivery_error,
)
from services.common.kafka.reader import assign_from_beginning
from services.common.settings import KafkaSettings

#: On the sender's FAILED 410 outcomes (APNs: the token is no longer valid). The fan-out reads
#: only the outcomes that carry it (services/fanout/dead_tokens.py).
TOKEN_DEAD_HEADER = "mdmpush.token_dead"

__all__ = [
    "PARTITION_UA",
    "TOKEN_DEAD_HEADER",
    "DeliveryError",
    "Headers",
    "PermanentDeliveryError",
    "ReliableProducer",
    "assign_from_beginning",
    # --- old names, until their callers have moved ---
    "dead_letter_headers",
    "dead_letter_headers_at",
    "make_producer",
    "produce_sync",
]


def make_producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """A bare idempotent confluent producer (old API; use ReliableProducer)."""
    return Producer(settings.producer_config(**overrides), logger=client_logger("producer"))


def produce_sync(
    producer: Producer,
    topic: str,
    value: bytes | None,
    key: bytes | str | None = None,
    headers: Headers | None = None,
    timeout_s: float = 30.0,
    partition: int | None = None,
) -> None:
    """Produce one record on a bare producer and wait for it (old API; use
    ReliableProducer.produce_sync)."""
    errors: list[Any] = []

    def on_delivery(err: Any, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(topic, value=value, key=key, headers=list(headers or []),
                     on_delivery=on_delivery,
                     partition=PARTITION_UA if partition is None else partition)
    remaining = producer.flush(timeout_s)
    if remaining:
        raise DeliveryError(f"{remaining} record(s) to {topic} not acknowledged in {timeout_s}s")
    if errors:
        raise delivery_error(errors[0], topic)


def dead_letter_headers(msg: Message, reason: str) -> list[tuple[str, bytes]]:
    """Old API (no service header); use dead_letter.dead_letter_headers / DeadLetterWriter."""
    return dead_letter_headers_at(msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                                  reason)


def dead_letter_headers_at(
    topic: str, partition: int, offset: int, reason: str
) -> list[tuple[str, bytes]]:
    """Old API; use dead_letter.dead_letter_headers."""
    return [
        ("mdmpush.dlq.reason", reason.encode()[:1000]),
        ("mdmpush.dlq.source.topic", topic.encode()),
        ("mdmpush.dlq.source.partition", str(partition).encode()),
        ("mdmpush.dlq.source.offset", str(offset).encode()),
        ("mdmpush.dlq.at", str(int(time.time() * 1000)).encode()),
    ]
