"""Idempotent topic creation from the catalogue."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from services.common.catalogue import Topics, TopicSpec
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


def create_topics(
    settings: KafkaSettings,
    specs: Iterable[TopicSpec],
    replication_factor: int = 1,
    partitions_override: int | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created (existing ones are kept).

    `partitions_override` lets tests use fewer partitions to keep a one-broker cluster fast.
    """
    topics = Topics(settings.topic_prefix)
    admin = AdminClient(settings.admin_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(
            topics.name(spec),
            num_partitions=partitions_override or spec.partitions,
            replication_factor=replication_factor,
            config=spec.config(),
        )
        for spec in specs
        if topics.name(spec) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    log.info("created %d topics", len(created))
    return created
