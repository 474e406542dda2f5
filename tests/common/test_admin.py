"""Topic creation asks the settings' replication, clamped to what the cluster can give."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from services.common import admin
from services.common.catalogue import CONFIG, Topics
from services.common.settings import KafkaSettings


@pytest.mark.kafka
def test_replication_is_clamped_to_the_brokers_with_one_warning(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(admin, "_warned", set())
    client = admin.admin_client(kafka_settings)
    brokers = len(client.list_topics(timeout=10).brokers)
    wanted = KafkaSettings(bootstrap_servers=kafka_settings.bootstrap_servers,
                           topic_prefix=kafka_settings.topic_prefix,
                           replication_factor=brokers + 2, min_insync_replicas=brokers + 1)
    with caplog.at_level(logging.WARNING, logger="services.common.admin"):
        first = admin.replication(wanted)
        again = admin.replication(wanted)
        admin.create_topics(wanted, [CONFIG])
    assert first == again == admin.Replication(brokers, brokers)
    warnings = [r.getMessage() for r in caplog.records if r.name == "services.common.admin"]
    assert len(warnings) == 1
    assert f"MDMPUSH_KAFKA_REPLICATION_FACTOR={brokers + 2}" in warnings[0]

    topic = Topics(wanted.topic_prefix).name(CONFIG)
    (future,) = client.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    config = future.result(30)
    assert config["min.insync.replicas"].value == str(brokers)
    assert config["cleanup.policy"].value == "compact"
    partitions = client.list_topics(topic, timeout=10).topics[topic].partitions
    assert all(len(p.replicas) == brokers for p in partitions.values())

