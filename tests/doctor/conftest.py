"""Fixtures for the doctor's Kafka tests: a producer of Avro records, and the failing history of
history_samples on this test's topics, where the CLI (pointed at them by cli_env) reads it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from tests.doctor.history_samples import ENROLLMENT, failing_history
from tests.support.samples import SAMPLES


class Publisher:
    """Produces records as the pipeline's services would: Avro values keyed by enrollment id."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.producer = ReliableProducer(settings, name="test")
        self.serde = AvroSerde()

    def send(self, topic: str, schema: str, key: str, value: dict[str, Any] | bytes | None
             ) -> None:
        """A record, raw bytes (to test undecodable input), or None (a tombstone)."""
        data = self.serde.encode(schema, value, topic) if isinstance(value, dict) else value
        self.producer.produce(topic, value=data, key=key)

    def flush(self) -> None:
        """Raises DeliveryError if a record was not acknowledged."""
        self.producer.flush(30)


@pytest.fixture
def publisher(kafka_settings: KafkaSettings) -> Iterator[Publisher]:
    pub = Publisher(kafka_settings)
    yield pub
    pub.flush()
    pub.producer.close()


@pytest.fixture
def failing_device(cli_env: Topics, publisher: Publisher) -> Topics:
    """ENROLLMENT's registry record, outcomes and alerts of failing_history(), on the broker
    before the test runs the doctor; returns the topics, for a test to add records of its own."""
    outcomes, alerts = failing_history()
    publisher.send(cli_env.registry, "DeviceRecord", ENROLLMENT, SAMPLES["DeviceRecord"])
    for o in outcomes:
        publisher.send(cli_env.outcomes, "PushOutcome", ENROLLMENT, o)
    for a in alerts:
        publisher.send(cli_env.alerts, "UnansweredPush", ENROLLMENT, a)
    publisher.flush()
    return cli_env
