"""Fixtures for the doctor's Kafka tests: a producer of Avro records, and the CLI's environment
pointed at this test's broker and topic prefix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.common.kafka import make_producer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings


class Publisher:
    """Produces records as the pipeline's services would: Avro values keyed by enrollment id."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.producer = make_producer(settings)
        self.serde = AvroSerde()

    def send(self, topic: str, schema: str, key: str, value: dict[str, Any] | bytes | None
             ) -> None:
        """A record, raw bytes (to test undecodable input), or None (a tombstone)."""
        data = self.serde.encode(schema, value, topic) if isinstance(value, dict) else value
        self.producer.produce(topic, value=data, key=key)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@pytest.fixture
def publisher(kafka_settings: KafkaSettings) -> Iterator[Publisher]:
    pub = Publisher(kafka_settings)
    yield pub
    pub.flush()
