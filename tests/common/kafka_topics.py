"""Ad-hoc topics for the plumbing tests (the catalogue's topics do not have small size limits)."""

from __future__ import annotations

from confluent_kafka.admin import NewTopic

from services.common.admin import admin_client
from services.common.settings import KafkaSettings


def make_topic(
    kafka: KafkaSettings, name: str, partitions: int = 1, config: dict[str, str] | None = None
) -> str:
    """Create `<prefix><name>` (deleted with the test's prefix) and return its full name."""
    topic = f"{kafka.topic_prefix}{name}"
    admin = admin_client(kafka)
    futures = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])
    futures[topic].result(30)
    return topic
