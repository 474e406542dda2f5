"""The fan-out's dead-letter topic: records it cannot use, set aside before their offset moves.

A wrapper of the shared `DeadLetterWriter` that an agent can await: the record is written and
acknowledged before the agent moves on, so the input's offset is never committed past a record
that is neither processed nor in the DLQ. The `DlqLimit` (MDMPUSH_KAFKA_DLQ_*) stops the agent
with DlqLimitExceeded when most of what it reads is poison (a wrong schema, not bad records).
"""

from __future__ import annotations

import asyncio

from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.producer import Headers, ReliableProducer
from services.common.settings import KafkaSettings

#: The `service` header of the fan-out's dead letters.
SERVICE = "fanout"


class DeadLetters:
    """`consumed()` per input record read; `await put(...)` per record set aside."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._producer = ReliableProducer(kafka, name="fanout-dlq")
        self._writer = DeadLetterWriter(
            self._producer, topic, service=SERVICE, limit=DlqLimit.from_settings(kafka))

    def consumed(self, n: int = 1) -> None:
        self._writer.consumed(n)

    async def put(
        self,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        extra_headers: Headers | None = None,
    ) -> None:
        """Write the record to the DLQ and return once Kafka acknowledged it (DeliveryError if
        it refused; DlqLimitExceeded, before writing, when over the limit)."""
        self._writer.write(source_topic=source_topic, partition=partition, offset=offset,
                           key=key, value=value, reason=reason, extra_headers=extra_headers)
        await asyncio.to_thread(self._producer.flush, 30.0)

    def close(self) -> None:
        self._producer.close()
