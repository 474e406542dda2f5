"""The gateway's Kafka producer: the shared `AsyncProducer` (services/common/kafka/aio.py).

The gateway answers a webhook only after its event is durable, so a 200 means "not lost";
`await producer.send(...)` returns once Kafka acknowledged the record.
"""

from __future__ import annotations

from services.common.kafka.aio import AsyncProducer
from services.common.kafka.producer import ReliableProducer
from services.common.settings import KafkaSettings

__all__ = ["AsyncProducer", "gateway_producer"]


def gateway_producer(kafka: KafkaSettings) -> AsyncProducer:
    """The gateway's producer: client role "gateway" (client.id, logger)."""
    return AsyncProducer(ReliableProducer(kafka, name="gateway"))
