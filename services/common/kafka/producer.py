"""The one confluent-kafka producer of the project: every record's delivery is checked.

Three ways a record can fail, and what the caller sees:

* the local queue is full (`BufferError`): back-pressure. `produce()` serves delivery callbacks
  and queues again; a record is never dropped because the producer is busy.
* librdkafka refuses it before queueing (`KafkaException` from `produce()`: record larger than
  `message.max.bytes`, unknown partition, fatal idempotence error): `PermanentDeliveryError`,
  at once, to the caller that has the record in hand.
* the broker refuses it or it times out (the delivery report): given to the caller's
  `on_delivery`, which classifies it with `is_permanent()`; without a callback it is remembered
  and raised by the next `flush()`, so nothing is refused silently.

The broker judges `max.message.bytes` per batch: a batch it refuses as too large takes every
record in it along. librdkafka's `message.max.bytes` (1 MB) keeps batches under the broker's
default; a topic configured smaller than that needs the producer's limit lowered to match.

A permanent error is never retried forever by anyone: retrying a record the broker can never
accept only stops everything behind it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.common.kafka.logs import client_logger, outage_filter
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str | bytes | None]]

#: librdkafka's "no partition given": the partitioner of the key chooses.
PARTITION_UA = -1

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: Longest `produce()` waits for a topic's metadata when librdkafka last found it missing.
METADATA_WAIT_S = 2.0

#: Errors no retry of the same record can cure (the broker's and librdkafka's codes).
_PERMANENT_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.INVALID_REQUIRED_ACKS,
    KafkaError.UNSUPPORTED_VERSION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._INVALID_ARG,
    KafkaError._FATAL,
})


class DeliveryError(RuntimeError):
    """Kafka refused or lost a record the caller needed acknowledged; `code` is Kafka's error
    code when it gave one (e.g. `KafkaError.UNKNOWN_TOPIC_OR_PART`: the dead-letter writer
    holds a record whose topic does not exist instead of failing)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentDeliveryError(DeliveryError):
    """The record can never be accepted as it is (too large, not authorised, no such topic or
    partition, invalid): dead-letter it or fail, never retry it."""


def is_permanent(err: KafkaError) -> bool:
    """True when retrying the same record cannot succeed (see `_PERMANENT_CODES`); a fatal
    error also counts: the producer instance that raised it accepts nothing more."""
    return err.code() in _PERMANENT_CODES or err.fatal()


def delivery_error(err: KafkaError, topic: str) -> DeliveryError:
    """The exception for a refused record: `PermanentDeliveryError` when `is_permanent`."""
    kind = PermanentDeliveryError if is_permanent(err) else DeliveryError
    return kind(f"Kafka refused a record to {topic}: {err.str()} ({err.name()})", err.code())


class ReliableProducer:
    """The one confluent-kafka producer wrapper: idempotent config from settings, librdkafka logs
    routed to Python logging, the one BufferError poll-and-retry loop, every delivery checked.

    Thread-safety is confluent-kafka's: produce from one thread, poll from any.
    """

    def __init__(self, kafka: KafkaSettings, *, name: str, **overrides: Any) -> None:
        self.name = name
        conf = kafka.producer_config(**{"client.id": f"{kafka.client_id}-{name}", **overrides})
        self._producer: Producer | None = Producer(conf, logger=client_logger(name))
        self._outage = outage_filter(name)
        self._refused: list[tuple[KafkaError, str]] = []
        self._lock = threading.Lock()
        #: How often produce() found the local queue full and waited (back-pressure, not loss).
        self.queue_full_waits = 0

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        on_delivery: DeliveryCallback | None = None,
        *,
        block: bool = True,
    ) -> None:
        """Queue one record. On a full local queue serve callbacks and retry (never drop); with
        `block=False` raise BufferError instead (callers that must not block, e.g. an event
        loop, wait their own way and call again).

        Raises PermanentDeliveryError when librdkafka refuses the record outright."""
        producer = self._producer
        if producer is None:
            raise RuntimeError(f"producer {self.name!r} is closed")
        asked = False
        while True:
            try:
                producer.produce(
                    topic, value, key,
                    partition=PARTITION_UA if partition is None else partition,
                    on_delivery=on_delivery or self._remember,
                    headers=list(headers) if headers else None,
                )
                return
            except BufferError:
                if not block:
                    raise
                self.queue_full_waits += 1
                producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0]
                known = isinstance(err, KafkaError)
                if known and err.code() == KafkaError._UNKNOWN_TOPIC and not asked:
                    self._ask_for(topic)
                    asked = True
                    continue
                detail = f"{err.str()} ({err.name()})" if known else str(exc)
                raise PermanentDeliveryError(
                    f"Kafka refused a record to {topic} before queueing it: {detail}",
                    err.code() if known else None) from exc

    def _ask_for(self, topic: str) -> None:
        """librdkafka refuses a record at once to a topic it last found missing, and may keep
        that view long after the topic is created again (minutes, seen on the correlator's
        producer; cf. librdkafka#3009): ask the cluster for the topic, which brings librdkafka's
        view up to date (within ~30 s in tests/faults/test_dlq_faults.py on a loaded machine;
        not in 4 minutes without asking, in one run)."""
        try:
            self.client.list_topics(topic, timeout=METADATA_WAIT_S)
        except KafkaException as exc:  # the produce then refuses the record as before
            log.debug("metadata of %s not read: %s", topic, exc)

    def _remember(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._refused.append((err, msg.topic() or "?"))

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery callbacks (and log lines); returns how many events were served."""
        return self.client.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; raise DeliveryError if some remain unacknowledged, or if
        a record produced without a callback was refused since the last flush
        (PermanentDeliveryError when that refusal is permanent)."""
        remaining = self.client.flush(timeout_s)
        with self._lock:
            refused, self._refused = self._refused, []
        if refused:
            err, topic = next(((e, t) for e, t in refused if is_permanent(e)), refused[0])
            error = delivery_error(err, topic)
            raise type(error)(f"{error} (and {len(refused) - 1} more)" if len(refused) > 1
                              else str(error), error.code)
        if remaining:
            raise DeliveryError(
                f"{remaining} record(s) not acknowledged by Kafka within {timeout_s}s")
        self._outage.recovered()

    def produce_sync(
        self,
        topic: str,
        value: bytes | None,
        key: str | bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """Produce one record and wait for its acknowledgement (CLI, SDK, tests; not hot paths).

        Raises DeliveryError, or PermanentDeliveryError when the record can never be accepted."""
        outcome: list[KafkaError | None] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            outcome.append(err)

        self.produce(topic, value, key, headers, partition, on_delivery)
        self.client.flush(timeout_s)
        if not outcome:
            raise DeliveryError(f"a record to {topic} was not acknowledged within {timeout_s}s")
        if outcome[0] is not None:
            raise delivery_error(outcome[0], topic)
        self._outage.recovered()

    @property
    def client(self) -> Producer:
        """The confluent-kafka producer (for what this class does not wrap, e.g. list_topics)."""
        if self._producer is None:
            raise RuntimeError(f"producer {self.name!r} is closed")
        return self._producer

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush (raising like `flush`) and release the client, so librdkafka stops connecting."""
        if self._producer is None:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._producer = None
