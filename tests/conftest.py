"""Fixtures shared by every test: the real broker, per-test topic isolation, settings."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.settings import KafkaSettings
from tests.support.broker import Broker, provide_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One real broker for the whole session."""
    with provide_broker() as b:
        yield b


@pytest.fixture
def kafka_settings(broker: Broker) -> KafkaSettings:
    """Settings with a unique topic prefix: tests never see each other's records."""
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        linger_ms=1,
    )


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> Topics:
    """The catalogue's topics, created with 2 partitions under this test's prefix."""
    create_topics(kafka_settings, all_topics(), partitions_override=2)
    return Topics(kafka_settings.topic_prefix)
