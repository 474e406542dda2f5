"""The one dead-letter writer: a poison record is set aside with where it came from and why.

A consumer that cannot process a record writes it, bytes untouched, to a dead-letter topic with
headers naming the source topic/partition/offset, the reason and the service, then moves on: one
bad record never stops a partition. But a consumer that suddenly dead-letters most of what it
reads has a bug or a wrong schema, not bad records; `DlqLimit` (in the spirit of Arroyo's) stops it
with a clear error instead of letting it empty a topic into the DLQ.

A dead letter refused because its DLQ topic does not exist (deleted, or never created on a
cluster that creates no topic on a write) is not a reason to stop: every record after it would
meet the same refusal, and a service that exits only crash-loops until an operator creates the
topic. The writer holds such a letter instead (its caller's delivery callback is not called, so
the source offset is not committed past it) and writes it again with back-off, 1 s doubling to
30 s, from `resend_due()`. One warning per outage names the topic, one line says when it is
writable again; `mdmpush_dlq_held_records` / `mdmpush_dlq_unwritable_total` count it. Nothing is
lost and nothing doubled: a held letter was never written, so a crash while it is held leaves
its source uncommitted and the restarted service writes it once; a caller that gives its input
back (a revoked partition, a session ended) `forget()`s the letters of it for the same reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Protocol

from confluent_kafka import KafkaError, Message
from prometheus_client import Counter, Gauge

from services.common.kafka.producer import (
    DeliveryCallback,
    DeliveryError,
    Headers,
    PermanentDeliveryError,
    delivery_error,
)
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

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

#: Kafka's codes for "no such topic" (the broker's, and librdkafka's once it knows): a dead letter
#: refused with one of them is held and written again, not failed.
MISSING_TOPIC_CODES = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})
#: Back-off of the writes of held dead letters: the first after this long, doubling up to the max.
HOLD_FIRST_S = 1.0
HOLD_MAX_S = 30.0

HELD = Gauge(
    "mdmpush_dlq_held_records",
    "Dead letters held because their DLQ topic does not exist: written again with back-off, "
    "their source offsets not committed meanwhile",
    ["service", "topic"],
)
UNWRITABLE = Counter(
    "mdmpush_dlq_unwritable_total",
    "Dead-letter writes refused because the DLQ topic does not exist (each attempt)",
    ["service", "topic"],
)


def topic_missing(error: KafkaError | BaseException | None) -> bool:
    """Whether Kafka refused a record because its topic does not exist."""
    if isinstance(error, KafkaError):
        return error.code() in MISSING_TOPIC_CODES
    return isinstance(error, DeliveryError) and error.code in MISSING_TOPIC_CODES


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


@dataclass(frozen=True)
class _Letter:
    """A dead letter as produced: kept to be written again while its topic is missing."""

    source: tuple[str, int]
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    on_delivery: DeliveryCallback | None


class DeadLetterWriter:
    """Writes poison records to one DLQ topic, holds them while that topic does not exist, and
    enforces the service's `DlqLimit`.

    Counts live in two halves of the window (the current one and the one before), so the ratio
    is always over between `window` and `2 * window` recent records, in O(1).

    Delivery results may be served on another thread than `write` runs on (the fan-out flushes
    in a worker thread): the held letters and the count in flight are guarded by a lock."""

    def __init__(
        self, producer: Produces, topic: str, *, service: str, limit: DlqLimit,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self.service = service
        self.limit = limit
        self._monotonic = monotonic
        self._consumed = [0, 0]  # previous half-window, current half-window
        self._dead = [0, 0]
        #: Records written to the DLQ since start (for metrics).
        self.written = 0
        self._lock = threading.Lock()
        #: Letters produced whose delivery result has not been served yet.
        self._in_flight = 0
        #: Letters refused because the topic does not exist, oldest first.
        self._held: list[_Letter] = []
        #: Refusals of letters written without `on_delivery`, raised by `check()`.
        self._refused: list[DeliveryError] = []
        #: Monotonic time the topic was first found missing in this outage (None: no outage).
        self._missing_since: float | None = None
        self._backoff_s = HOLD_FIRST_S
        self._resend_at = 0.0
        #: Kafka's words for the last refusal of a held letter.
        self.held_because = ""
        self._held_gauge = HELD.labels(service, topic)
        self._unwritable = UNWRITABLE.labels(service, topic)
        self._held_gauge.set(0)

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
        """Queue the record to the DLQ. `on_delivery` gets its result once it is written, or
        refused for another reason than a missing topic (without it, `check()` raises such a
        refusal); a letter whose topic is missing is held meanwhile (`held`). One librdkafka
        refuses as too large goes without its value (header VALUE_DROPPED_HEADER says why).
        Raises DlqLimitExceeded, before writing, when this record would put the service over its
        limit: the record stays in its source topic."""
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
        self._send(_Letter((source_topic, partition), key, value, headers, on_delivery))
        self._dead[1] += 1
        self.written += 1

    @property
    def held(self) -> int:
        """Letters held because the DLQ topic does not exist."""
        return len(self._held)

    @property
    def in_flight(self) -> int:
        """Letters produced whose delivery result has not been served yet."""
        return self._in_flight

    def resend_in(self) -> float:
        """Seconds until `resend_due()` writes the held letters again (0: now)."""
        return max(0.0, self._resend_at - self._monotonic())

    def resend_due(self) -> int:
        """Write the held letters again if their back-off is over (call it from the thread that
        writes; cheap when nothing is held). Returns how many were produced again."""
        if not self._held or self._monotonic() < self._resend_at:
            return 0
        with self._lock:
            letters, self._held = self._held, []
            self._held_gauge.set(0)
        for letter in letters:
            self._send(letter)
        # Set after the sends: one refused again at once is held until the next back-off.
        self._resend_at = self._monotonic() + self._backoff_s
        self._backoff_s = min(2 * self._backoff_s, HOLD_MAX_S)
        return len(letters)

    def forget(self, sources: Collection[tuple[str, int]] | None = None) -> int:
        """Drop the held letters of these (topic, partition) sources (None: all): their caller
        gave those inputs back uncommitted, and whoever reads them next writes them (holding
        them here too would write them twice). Returns how many were dropped."""
        with self._lock:
            kept = [] if sources is None else [
                letter for letter in self._held if letter.source not in sources]
            dropped = len(self._held) - len(kept)
            self._held = kept
            self._held_gauge.set(len(kept))
        return dropped

    def check(self) -> None:
        """Raise the first refusal of a letter written without `on_delivery` since the last
        call (PermanentDeliveryError when permanent): for callers that flush, then check."""
        with self._lock:
            refused, self._refused = self._refused, []
        if refused:
            raise refused[0]

    def _send(self, letter: _Letter) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self._producer.produce(self.topic, letter.value, letter.key, letter.headers,
                                   on_delivery=lambda err, msg: self._delivered(letter, err, msg))
        except PermanentDeliveryError as exc:
            with self._lock:
                self._in_flight -= 1
            if topic_missing(exc):
                self._hold(letter, str(exc))
                return
            if letter.value is None:
                raise
            # Too large for the DLQ too: keep where it came from and why, without the bytes
            # (they are still in the source topic until its retention ends).
            self._send(replace(letter, value=None, headers=[
                *letter.headers, (VALUE_DROPPED_HEADER, str(exc)[:MAX_REASON_BYTES])]))

    def _delivered(self, letter: _Letter, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            self._in_flight -= 1
        if err is not None and topic_missing(err):
            self._hold(letter, f"{err.str()} ({err.name()})")
            return
        if err is None and self._missing_since is not None:
            with self._lock:
                since, self._missing_since = self._missing_since, None
                self._backoff_s = HOLD_FIRST_S
            if since is not None:
                log.warning("dead-letter topic %s is writable again after %.0f s: held dead "
                            "letters are being written", self.topic, self._monotonic() - since)
        if letter.on_delivery is not None:
            letter.on_delivery(err, msg)
        elif err is not None:
            with self._lock:
                self._refused.append(delivery_error(err, self.topic))

    def _hold(self, letter: _Letter, reason: str) -> None:
        self._unwritable.inc()
        now = self._monotonic()
        self.held_because = reason
        with self._lock:
            self._held.append(letter)
            self._held_gauge.set(len(self._held))
            first = self._missing_since is None
            if first:
                self._missing_since = now
                self._backoff_s = HOLD_FIRST_S
                self._resend_at = now + self._backoff_s
        if first:
            log.warning("dead-letter topic %s does not exist (%s): %s holds its dead letters, "
                        "commits no input offset past them and writes them again every "
                        "%.0f-%.0f s until the topic is there", self.topic, reason, self.service,
                        HOLD_FIRST_S, HOLD_MAX_S)
