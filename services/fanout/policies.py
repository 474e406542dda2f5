"""Shard counts from the compacted `mdm.push.config.v1`, read by every worker in full.

The config topic is keyed by certificate, not by anything the fan-out partitions on, so each
worker reads all of it with a group-less consumer (nothing committed, always from the start) in
a thread of its own: expansion asks `shards(topic)` without awaiting anything. `wait_loaded()`
returns once everything that was on the topic at start has been read, so the first jobs after
a restart use the right keys. An undecodable policy is logged and counted, not dead-lettered:
every worker re-reads the whole topic at each start and would dead-letter it again each time
(the sender treats the topic the same way).
"""

from __future__ import annotations

import logging
import threading
import uuid

from confluent_kafka import Consumer, Message

from services.common.errors import DecodeError
from services.common.kafka import assign_from_beginning
from services.common.policy import DEFAULT_CERTIFICATE, PushPolicy
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.fanout import metrics

log = logging.getLogger(__name__)


class ShardBook:
    """Shards per certificate topic: the certificate's policy, else '*', else 1."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: AvroSerde) -> None:
        self._kafka = kafka
        self._topic = topic
        self._serde = serde
        self._shards: dict[str, int] = {}
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
        found = self._shards.get(topic)
        if found is None:
            found = self._shards.get(DEFAULT_CERTIFICATE, 1)
        return found

    def apply(self, msg: Message) -> None:
        """One record of the config topic: a policy, or a tombstone removing one."""
        key = (msg.key() or b"").decode("utf-8", "replace")
        value = msg.value()
        if value is None:
            self._shards.pop(key, None)
            return
        try:
            record = self._serde.decode_as(value, "PushPolicy")
        except DecodeError as exc:
            metrics.POISON.labels("config").inc()
            log.warning("ignoring undecodable policy at offset %s: %s", msg.offset(), exc.reason)
            return
        policy = PushPolicy.from_record(record)
        self._shards[policy.certificate] = policy.shards

    def _run(self) -> None:
        consumer = Consumer(
            self._kafka.consumer_config(
                f"mdmpush-fanout-config-{uuid.uuid4().hex}",
                **{"enable.auto.commit": False},
            )
        )
        try:
            targets = assign_from_beginning(consumer, self._topic, timeout_s=30)
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is None:
                        self.apply(msg)
                        partition, offset = msg.partition() or 0, msg.offset() or 0
                        if offset + 1 >= targets.get(partition, 0):
                            targets.pop(partition, None)
                if not targets:
                    self._loaded.set()
        except Exception:  # a dead policy thread must be visible, not silent
            log.exception("policy reader stopped; shard counts are frozen")
            raise
        finally:
            consumer.close()
