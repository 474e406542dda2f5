"""The fan-out's dead-letter topic: records it cannot use, set aside before their offset moves.

The shared `DeadLetterWriter`, plus a way for an agent to await the acknowledgement: the record
is written and acknowledged before the agent moves on, so the input's offset is never committed
past a record that is neither processed nor in the DLQ. The `DlqLimit` (MDMPUSH_KAFKA_DLQ_*)
stops the agent with DlqLimitExceeded when most of what it reads is poison (a wrong schema, not
bad records).
"""

from __future__ import annotations

import asyncio

from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.producer import ReliableProducer
from services.common.settings import KafkaSettings

#: The `service` header of the fan-out's dead letters.
SERVICE = "fanout"


class DeadLetters(DeadLetterWriter):
    """`consumed()` per input record read; `write(...)` then `await acknowledged()` per record
    set aside."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._reliable = ReliableProducer(kafka, name="fanout-dlq")
        super().__init__(self._reliable, topic, service=SERVICE,
                         limit=DlqLimit.from_settings(kafka))

    async def acknowledged(self) -> None:
        """Return once every dead letter written so far is acknowledged (DeliveryError if Kafka
        refused one)."""
        await asyncio.to_thread(self._reliable.flush, 30.0)
