"""Shard counts from the compacted `mdm.push.config.v1`, read by every worker in full.

The config topic is a `CompactedView` (services/common/kafka/compacted.py): every worker reads
all of it, in a thread of its own, so expansion asks `shards(topic)` without awaiting anything.
`wait_loaded()` returns once everything that was on the topic at start has been read, so the
first jobs after a restart use the right keys. An undecodable policy is logged and counted
(`mdmpush_fanout_poison_total{input="config"}`), not dead-lettered: every worker re-reads the
whole topic at each start and would dead-letter it again each time.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Message

from services.common.errors import TopicReadError
from services.common.kafka.compacted import CompactedView
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.fanout import metrics

log = logging.getLogger(__name__)

#: Wait before asking again when Kafka does not answer for the config topic.
RETRY_S = 1.0


class ShardBook:
    """Shards per certificate topic: the certificate's policy, else '*', else 1."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: AvroSerde) -> None:
        def decode(value: bytes) -> PushPolicy:
            return PushPolicy.from_record(serde.decode_as(value, "PushPolicy"))

        self._view = CompactedView(kafka, topic, decode, name="fanout-config",
                                   on_undecodable=_count_poison)
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fanout-policies", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def wait_loaded(self, timeout_s: float) -> bool:
        return self._loaded.wait(timeout_s)

    def shards(self, topic: str) -> int:
        policy = self._view.get(topic)
        return policy.shards if policy is not None else 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._view.poll(0.2)
                except TopicReadError as exc:  # Kafka not answering yet: try again
                    log.warning("push policies not readable yet: %s", exc)
                    self._stop.wait(RETRY_S)
                    continue
                if self._view.loaded:
                    self._loaded.set()
        except Exception:  # a dead policy thread must be visible, not silent
            log.exception("policy reader stopped; shard counts are frozen")
            raise
        finally:
            self._view.close()


def _count_poison(_msg: Message, _exc: Exception) -> None:
    metrics.POISON.labels("config").inc()
