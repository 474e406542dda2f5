"""Operators tune librdkafka from the environment, over every service's own defaults."""

from __future__ import annotations

import pytest

from services.common.settings import KafkaSettings


def test_overrides_from_env_apply_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDMPUSH_KAFKA_PRODUCER_OVERRIDES", '{"linger.ms": 20, "acks": "1"}')
    monkeypatch.setenv("MDMPUSH_KAFKA_CONSUMER_OVERRIDES", '{"fetch.min.bytes": 1024}')
    kafka = KafkaSettings()
    producer = kafka.producer_config(**{"linger.ms": 10})  # a service's own default
    assert producer["linger.ms"] == 20 and producer["acks"] == "1"
    assert producer["enable.idempotence"] is True
    consumer = kafka.consumer_config("g", **{"fetch.min.bytes": 1})
    assert consumer["fetch.min.bytes"] == 1024 and consumer["group.id"] == "g"


def test_internal_topics_default_to_production_replication() -> None:
    kafka = KafkaSettings()
    assert (kafka.replication_factor, kafka.min_insync_replicas) == (3, 2)
