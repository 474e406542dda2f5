"""Shard counts from the compacted `mdm.push.config.v1`, read by every worker in full.

The config topic is a `CompactedView` kept up to date by a `ViewThread` (views.py), so
expansion asks `shards(topic)` without awaiting anything. An undecodable policy is counted as
`mdmpush_fanout_poison_total{input="config"}`.
"""

from __future__ import annotations

from confluent_kafka import Message

from services.common.kafka.compacted import CompactedView
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.fanout import metrics
from services.fanout.views import ViewThread


class ShardBook(ViewThread[PushPolicy]):
    """Shards per certificate topic: the certificate's policy, else '*', else 1."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: AvroSerde) -> None:
        def decode(value: bytes) -> PushPolicy:
            return PushPolicy.from_record(serde.decode_as(value, "PushPolicy"))

        super().__init__(CompactedView(kafka, topic, decode, name="fanout-config",
                                       on_undecodable=_count_poison), "policies")

    def shards(self, topic: str) -> int:
        policy = self.view.get(topic)
        return policy.shards if policy is not None else 1


def _count_poison(_msg: Message, _exc: Exception) -> None:
    metrics.POISON.labels("config").inc()
