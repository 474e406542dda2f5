"""The expansion's producer: queue a batch without waiting, then await its acknowledgement once.

faust's producer costs tens of microseconds of Python per record; librdkafka queues a record in
a few and batches in C. The agent queues a whole chunk, then awaits `flush()` — run in a thread,
so the event loop (and faust's heartbeats) keep going — before it records the chunk as done and
before faust can commit the slice's offset.

What Kafka refuses comes back in two kinds. A transient refusal (timeout, broker gone) is
produced again with a growing pause (1 s doubling to 30 s), `max_attempts` times at most (about
five minutes), then `flush()` raises DeliveryError and the worker stops without committing (see
app.py): jobs have deterministic ids, so a repeat is recognisable, a loss is not. A permanent
one (record too large, not authorised) would be refused forever, so `flush()` returns it to the
caller, which dead-letters the source.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from services.common.kafka.producer import (
    DeliveryError,
    PermanentDeliveryError,
    ReliableProducer,
    is_permanent,
)
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: librdkafka settings for bulk expansion: bigger batches than the interactive defaults.
BULK_OVERRIDES = {
    "linger.ms": 10,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}

#: The longest pause between two attempts at transiently refused records.
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record Kafka can never accept as it is, and why."""

    topic: str
    key: bytes | str | None
    reason: str


class BatchProducer:
    """Queues records, then `await flush()` settles them all: acknowledged or refused."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        name: str = "fanout",
        retry_backoff_s: float = 1.0,
        max_attempts: int = 12,
        report_acks: bool = True,
    ) -> None:
        """`report_acks` False: librdkafka reports refused records only
        (`delivery.report.only.error`), so an acknowledged record costs no Python call (~1 µs
        of the registry's ingestion per record) and `take_acked` has nothing. Every record is
        still checked: `flush` returns once librdkafka holds none, each acknowledged or
        reported refused (and then retried or returned)."""
        only_errors = {} if report_acks else {"delivery.report.only.error": True}
        self._producer = ReliableProducer(kafka, name=name, **BULK_OVERRIDES, **only_errors)
        self._lock = threading.Lock()  # callbacks run in the flush thread
        self._transient: list[Message] = []
        self._refused: list[Refusal] = []
        #: Offset of the last acknowledged record per (topic, partition), until `take_acked`.
        self._acked: dict[tuple[str, int], int] = {}
        self._retry_backoff_s = retry_backoff_s
        self._max_attempts = max_attempts

    def produce(
        self, topic: str, value: bytes | None, key: str | bytes, partition: int | None = None
    ) -> None:
        """Queue one record (`partition` None: the partitioner of the key chooses; `value` None:
        a tombstone). One that librdkafka refuses outright is kept for `flush()` to return, not
        raised."""
        try:
            self._producer.produce(topic, value, key, partition=partition,
                                   on_delivery=self._on_delivery)
        except PermanentDeliveryError as exc:
            with self._lock:
                self._refused.append(Refusal(topic, key, str(exc)))

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            # In order per partition: the last report is the highest offset.
            self._acked[(msg.topic() or "", msg.partition() or 0)] = msg.offset() or 0
            return
        with self._lock:
            if is_permanent(err):
                reason = f"Kafka refused a record to {msg.topic()}: {err.str()} ({err.name()})"
                self._refused.append(Refusal(msg.topic() or "", msg.key(), reason))
            else:
                self._transient.append(msg)

    def take_acked(self) -> dict[tuple[str, int], int]:
        """The last acknowledged offset per (topic, partition) since the previous call (call it
        after `flush()`: the reports come in the flush thread)."""
        with self._lock:
            acked, self._acked = self._acked, {}
        return acked

    async def flush(self) -> list[Refusal]:
        """Return once every queued record is acknowledged or permanently refused; returns the
        refused ones. Transient refusals are produced again (to the partition of their first
        attempt); DeliveryError once they were refused `max_attempts` times."""
        backoff = self._retry_backoff_s
        for attempt in range(1, self._max_attempts + 1):
            await asyncio.to_thread(self._producer.client.flush, 30.0)
            with self._lock:
                failed, self._transient = self._transient, []
                if not failed and len(self._producer.client) == 0:
                    refused, self._refused = self._refused, []
                    return refused
            if attempt == self._max_attempts:
                break
            log.warning("%d record(s) refused by Kafka for now, %d unacknowledged (attempt %d "
                        "of %d); producing again in %.0fs", len(failed),
                        len(self._producer.client), attempt, self._max_attempts, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            for msg in failed:
                self.produce(msg.topic() or "", msg.value(), msg.key() or b"",
                             msg.partition())
        raise DeliveryError(f"records still refused or unacknowledged by Kafka after "
                            f"{self._max_attempts} attempts")
