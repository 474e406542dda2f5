"""410s from the outcomes topic, read with librdkafka and forwarded to the registry.

Every push has an outcome, and faust's aiokafka parses each record in Python: reading the whole
outcomes topic through a faust agent made the fan-out spend more CPU than the sender it feeds
(bench_e2e: 4.6 s against 4.0 s for 50,000 pushes, about 70 µs per outcome). Only the FAILED 410
outcomes matter to the registry, and the sender marks them with TOKEN_DEAD_HEADER. So this
thread reads the topic with a plain consumer (in C, its own group: each outcome once per
fan-out deployment), passes over unmarked records without decoding them, and forwards each 410
as a `dead` change to the registry-updates topic — in faust's JSON, on the registry partition of
its enrollment — where the registry agent applies it like any other change. An offset is stored
only after the changes of the records before it are acknowledged (at least once; applying a
`dead` change twice changes nothing). An undecodable marked record is counted and skipped: the
correlator, which reads every outcome, dead-letters it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from services.common.errors import DecodeError
from services.common.kafka import TOKEN_DEAD_HEADER
from services.common.kafka.logs import client_logger
from services.common.kafka.producer import (
    DeliveryError,
    PermanentDeliveryError,
    ReliableProducer,
)
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.fanout import metrics
from services.fanout.jobs import registry_partition

log = logging.getLogger(__name__)

#: Wait between attempts to forward a change Kafka refused for now (doubling up to MAX_RETRY_S).
RETRY_S = 1.0
MAX_RETRY_S = 30.0

#: The client role of this reader's consumer and producer (client.id, logger).
NAME = "fanout-dead-tokens"


def dead_change(outcome: dict[str, Any]) -> dict[str, Any]:
    """The registry change a FAILED 410 outcome makes: its token is dead since APNs says."""
    since = outcome["apns_timestamp"] or outcome["at"]
    return {"dead": {"token_hex": outcome["token_hex"], "since": since}}


def is_marked(headers: Sequence[tuple[str, object]] | Mapping[str, object] | None) -> bool:
    """Whether the outcome carries TOKEN_DEAD_HEADER (its value does not matter)."""
    if not headers:
        return False
    if isinstance(headers, Mapping):
        return TOKEN_DEAD_HEADER in headers
    return any(key == TOKEN_DEAD_HEADER for key, _ in headers)


class DeadTokenFeed:
    """A thread from start() to stop(): outcomes topic in, `dead` changes out."""

    def __init__(
        self,
        kafka: KafkaSettings,
        outcomes_topic: str,
        updates_topic: str,
        partitions: int,
        group_id: str,
        serde: AvroSerde,
    ) -> None:
        self._kafka = kafka
        self._outcomes = outcomes_topic
        self._updates = updates_topic
        self._partitions = partitions
        self._group_id = group_id
        self._serde = serde
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fanout-dead-tokens", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = Consumer(self._kafka.consumer_config(self._group_id),
                            logger=client_logger(NAME))
        producer = ReliableProducer(self._kafka, name=NAME)
        try:
            consumer.subscribe([self._outcomes])
            while not self._stop.is_set():
                done: dict[tuple[str, int], int] = {}
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    if is_marked(msg.headers()) and not self._forward(producer, msg):
                        break  # stopping: this record's offset is not stored
                    done[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
                if done:
                    self._store(consumer, done)
        except Exception:  # a dead reader must be visible, not silent
            log.exception("dead-token reader stopped; 410s no longer reach the registry")
            raise
        finally:
            consumer.close()
            producer.close()

    def _forward(self, producer: ReliableProducer, msg: Message) -> bool:
        """Forward the record's change; False only if stopped before Kafka acknowledged it.

        A change Kafka can never accept is logged, counted and passed over (the 410 is lost to
        the registry, which then keeps pushing to a dead token: visible, not stuck)."""
        try:
            outcome = self._serde.decode_as(msg.value(), "PushOutcome")
        except DecodeError as exc:
            metrics.POISON.labels("outcomes").inc()
            log.warning("undecodable 410 outcome at %s/%s: %s", msg.partition(), msg.offset(),
                        exc.reason)
            return True
        eid = outcome["enrollment_id"]
        key = json.dumps(eid).encode()
        value = json.dumps(dead_change(outcome)).encode()
        partition = registry_partition(eid, self._partitions)
        wait_s = RETRY_S
        while not self._stop.is_set():
            try:
                producer.produce_sync(self._updates, value, key=key, partition=partition)
                metrics.REGISTRY_INPUTS.labels("forwarded").inc()
                return True
            except PermanentDeliveryError as exc:
                metrics.REFUSED.labels("dead_token").inc()
                log.error("the 410 of %s cannot be forwarded, passing over it: %s", eid, exc)
                return True
            except DeliveryError as exc:
                log.warning("forwarding a 410 of %s failed, again in %.0fs: %s", eid, wait_s,
                            exc)
                self._stop.wait(wait_s)
                wait_s = min(wait_s * 2, MAX_RETRY_S)
        return False

    @staticmethod
    def _store(consumer: Consumer, done: dict[tuple[str, int], int]) -> None:
        try:
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()])
        except KafkaException as exc:  # e.g. revoked meanwhile: read again by the new owner
            log.warning("could not store outcome offsets: %s", exc)
