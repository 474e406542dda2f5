"""The one dead-letter writer: a poison record is set aside with where it came from and why.

A consumer that cannot process a record writes it, bytes untouched, to a dead-letter topic with
headers naming the source topic/partition/offset, the reason and the service, then moves on: one
bad record never stops a partition. But a consumer that suddenly dead-letters most of what it
reads has a bug or a wrong schema, not bad records; `DlqLimit` (in the spirit of Arroyo's) stops it
with a clear error instead of letting it empty a topic into the DLQ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from services.common.kafka.producer import DeliveryCallback, Headers, PermanentDeliveryError
from services.common.settings import KafkaSettings

REASON_HEADER = "mdmpush.dlq.reason"
SOURCE_TOPIC_HEADER = "mdmpush.dlq.source.topic"
SOURCE_PARTITION_HEADER = "mdmpush.dlq.source.partition"
SOURCE_OFFSET_HEADER = "mdmpush.dlq.source.offset"
SERVICE_HEADER = "mdmpush.dlq.service"
AT_HEADER = "mdmpush.dlq.at"
#: On a dead letter whose value Kafka could not take (too large): why it was left out.
VALUE_DROPPED_HEADER = "mdmpush.dlq.value_dropped"

#: Reasons are for humans; a huge exception text must not make the DLQ record too large.
MAX_REASON_BYTES = 1000


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, service: str
) -> list[tuple[str, bytes]]:
    """Where a poison record came from, why it was set aside, by whom and when (epoch ms)."""
    return [
        (REASON_HEADER, reason.encode()[:MAX_REASON_BYTES]),
        (SOURCE_TOPIC_HEADER, topic.encode()),
        (SOURCE_PARTITION_HEADER, str(partition).encode()),
        (SOURCE_OFFSET_HEADER, str(offset).encode()),
        (SERVICE_HEADER, service.encode()),
        (AT_HEADER, str(int(time.time() * 1000)).encode()),
    ]


class Produces(Protocol):
    """What the writer needs of a producer: `ReliableProducer.produce`'s signature (the sender
    hands it its Kafka I/O seam, whose in-memory twin serves broker-free tests)."""

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None: ...


class DlqLimitExceeded(RuntimeError):
    """A consumer dead-lettered more than its limit allows: stop and look, do not carry on."""


@dataclass(frozen=True)
class DlqLimit:
    """At most `max_ratio` of the records consumed may go to the DLQ, judged once at least
    `min_records` were consumed, over roughly the last `window` consumed records (so a flood after
    a long healthy run still trips)."""

    max_ratio: float
    min_records: int
    window: int = 10_000

    @classmethod
    def from_settings(cls, kafka: KafkaSettings) -> DlqLimit:
        """The limit every service uses unless it has a reason for its own."""
        return cls(max_ratio=kafka.dlq_max_ratio, min_records=kafka.dlq_min_records)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_ratio <= 1.0:
            raise ValueError(f"DlqLimit.max_ratio must be within [0, 1], not {self.max_ratio}")
        if self.min_records < 1 or self.window < self.min_records:
            raise ValueError("DlqLimit needs 1 <= min_records <= window")


class DeadLetterWriter:
    """Writes poison records to one DLQ topic and enforces the service's `DlqLimit`.

    Counts live in two halves of the window (the current one and the one before), so the ratio
    is always over between `window` and `2 * window` recent records, in O(1)."""

    def __init__(
        self, producer: Produces, topic: str, *, service: str, limit: DlqLimit
    ) -> None:
        self._producer = producer
        self.topic = topic
        self.service = service
        self.limit = limit
        self._consumed = [0, 0]  # previous half-window, current half-window
        self._dead = [0, 0]
        #: Records written to the DLQ since start (for metrics).
        self.written = 0

    def consumed(self, n: int = 1) -> None:
        """Count records consumed (the ratio's denominator)."""
        self._consumed[1] += n
        if self._consumed[1] >= self.limit.window:
            self._consumed = [self._consumed[1], 0]
            self._dead = [self._dead[1], 0]

    def write(
        self,
        *,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        on_delivery: DeliveryCallback | None = None,
        extra_headers: Headers | None = None,
    ) -> None:
        """Queue the record to the DLQ (its delivery checked by `on_delivery`, else by the
        producer's next flush); one librdkafka refuses as too large goes without its value (header
        VALUE_DROPPED_HEADER says why). Raises DlqLimitExceeded, before writing, when this record
        would put the service over its limit: the record stays in its source topic."""
        consumed = sum(self._consumed)
        dead = sum(self._dead) + 1
        if consumed >= self.limit.min_records and dead > self.limit.max_ratio * consumed:
            raise DlqLimitExceeded(
                f"{self.service}: {dead} of the last {consumed} records consumed would go to the "
                f"dead-letter topic {self.topic} (limit {self.limit.max_ratio:.0%}, judged over "
                f"the last {self.limit.window}-{2 * self.limit.window} records once "
                f"{self.limit.min_records} were consumed); stopping instead of emptying "
                f"{source_topic} into it. Last reason: {reason}")
        headers: list[tuple[str, str | bytes | None]] = list(
            dead_letter_headers(source_topic, partition, offset, reason, self.service))
        headers.extend(extra_headers or [])
        try:
            self._producer.produce(self.topic, value, key, headers, on_delivery=on_delivery)
        except PermanentDeliveryError as exc:
            if value is None:
                raise
            # Too large for the DLQ too: keep where it came from and why, without the bytes
            # (they are still in the source topic until its retention ends).
            headers.append((VALUE_DROPPED_HEADER, str(exc)[:MAX_REASON_BYTES]))
            self._producer.produce(self.topic, None, key, headers, on_delivery=on_delivery)
        self._dead[1] += 1
        self.written += 1
