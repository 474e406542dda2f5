"""Idempotent topic creation from the catalogue, with the replication the cluster can give.

Production wants every topic on 3 brokers with 2 in sync (MDMPUSH_KAFKA_REPLICATION_FACTOR /
MDMPUSH_KAFKA_MIN_INSYNC_REPLICAS); a one-broker dev stack cannot. `replication()` clamps the
settings to the broker count and says so once, naming the setting, so the same defaults work on
a laptop and in production.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from services.common.catalogue import Topics, TopicSpec
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: (wanted, brokers) pairs already warned about: one warning per process, not per topic.
_warned: set[tuple[int, int]] = set()


@dataclass(frozen=True, slots=True)
class Replication:
    """Replication factor and min.insync.replicas for new topics."""

    factor: int
    min_insync: int

    def config(self) -> dict[str, str]:
        """The topic-level config it implies."""
        return {"min.insync.replicas": str(self.min_insync)}


def admin_client(settings: KafkaSettings) -> AdminClient:
    """An admin client whose librdkafka log lines go through Python logging."""
    return AdminClient(settings.admin_config(), logger=client_logger("admin"))


def replication(
    settings: KafkaSettings, admin: AdminClient | None = None, timeout_s: float = 30.0
) -> Replication:
    """The settings' replication, clamped to the cluster's broker count (with one WARNING)."""
    admin = admin or admin_client(settings)
    brokers = len(admin.list_topics(timeout=timeout_s).brokers)
    wanted = settings.replication_factor
    factor = max(1, min(wanted, brokers))
    if factor < wanted and (wanted, brokers) not in _warned:
        _warned.add((wanted, brokers))
        log.warning("MDMPUSH_KAFKA_REPLICATION_FACTOR=%d but the cluster has %d broker(s): new "
                    "topics get replication factor %d (fine for a dev stack, not production)",
                    wanted, brokers, factor)
    return Replication(factor, min(settings.min_insync_replicas, factor))


def create_topics(
    settings: KafkaSettings,
    specs: Iterable[TopicSpec],
    replication_factor: int | None = None,
    partitions_override: int | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created (existing ones are kept).

    `replication_factor` None: the settings' (see `replication`); an explicit one is used as
    given. `partitions_override` lets tests use fewer partitions to keep a one-broker cluster fast.
    """
    topics = Topics(settings.topic_prefix)
    admin = admin_client(settings)
    if replication_factor is None:
        rep = replication(settings, admin, timeout_s)
    else:
        rep = Replication(replication_factor,
                          min(settings.min_insync_replicas, replication_factor))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(
            topics.name(spec),
            num_partitions=partitions_override or spec.partitions,
            replication_factor=rep.factor,
            config={**spec.config(), **rep.config()},
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
