"""A small Kafka I/O seam for a consume-process-produce loop that commits itself (the sender's).

The loop's rules (back-pressure, retry due times, commit marks, poison records) are logic; the
Kafka clients are I/O. `KafkaIO` is the little the loop needs from Kafka — consume, pause,
resume, seek, produce, commit with metadata, the committed positions, rebalance callbacks — so
the same loop runs on `ConfluentKafkaIO` (librdkafka; production and the integration tests) and
on `memory.MemoryKafkaIO` (unit tests that need no broker).

Records cross the seam as they come: confluent's `Message` satisfies `Record`, so the hot path
converts nothing per record. Partitions are `(topic, partition)` tuples; `TopicPartition`
objects are built only at the (rare) pause, seek and commit calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.common.kafka.logs import client_logger
from services.common.kafka.producer import (
    DeliveryCallback,
    DeliveryError,
    Headers,
    ReliableProducer,
)
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: (topic, partition)
Partition = tuple[str, int]

#: librdkafka's "no committed offset" (OFFSET_INVALID).
NO_OFFSET = -1001


class Record(Protocol):
    """A consumed record; confluent-kafka's `Message` is one, unchanged."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(
        self,
    ) -> list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None: ...
    def error(self) -> KafkaError | None: ...


@dataclass(frozen=True, slots=True)
class Position:
    """A partition's committed (or to-be-committed) offset and its metadata."""

    topic: str
    partition: int
    offset: int
    metadata: str = ""


#: on_assign / on_revoke: the partitions gained or taken away.
PartitionsCallback = Callable[[list[Partition]], None]
#: on_committed(error, failed): the answer to a commit; `error` is the reason text when the whole
#: commit failed (None otherwise), `failed` lists the partitions whose offset was not stored.
CommitCallback = Callable[[str | None, list[Partition]], None]


class KafkaIO(Protocol):
    """What a self-committing consume-process-produce loop needs from Kafka."""

    def subscribe(self, topics: Sequence[str], *, on_assign: PartitionsCallback,
                  on_revoke: PartitionsCallback, on_committed: CommitCallback) -> None:
        """Join the group; the callbacks run inside `consume` (as librdkafka's do)."""
        ...

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` for the first."""
        ...

    def pause(self, partitions: Sequence[Partition]) -> None:
        """Stop fetching these partitions; what was prefetched for them is dropped."""
        ...

    def resume(self, partitions: Sequence[Partition]) -> None:
        """Fetch again, from the consumed position (or the last `seek`)."""
        ...

    def seek(self, partition: Partition, offset: int) -> None:
        """The next record of `partition` handed out is the one at `offset`."""
        ...

    def assignment(self) -> list[Partition]:
        ...

    def committed(self, partitions: Sequence[Partition], timeout_s: float) -> list[Position]:
        """The group's committed positions (offset NO_OFFSET if none); raises KafkaException
        if Kafka does not answer in `timeout_s`."""
        ...

    def commit(self, positions: Sequence[Position], *, asynchronous: bool) -> None:
        """Store offsets with their metadata; the answer (also a failure to send the commit)
        goes to `on_committed`: from a later `consume`/`poll` when asynchronous, before
        returning otherwise."""
        ...

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                headers: Headers | None = None, partition: int | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Queue a record (back-pressure on a full queue, never a drop); `on_delivery` gets its
        result. Raises PermanentDeliveryError for a record Kafka can never take as is."""
        ...

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery results (and their callbacks); returns how many."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait for every produced record's result; raises DeliveryError if some remain."""
        ...

    def close(self) -> None:
        """Leave the group (no commit) and close the producer; records still unacknowledged
        are given up (the loop has not committed their sources, so they are read again)."""
        ...


def group_consumer_config(kafka: KafkaSettings, *, group_id: str, name: str,
                          defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka configuration of a self-committing loop's consumer: the settings' connection,
    the service's `defaults` over them, the operator's `consumer_overrides` over those."""
    config = kafka.consumer_config(group_id, **{
        "client.id": f"{kafka.client_id}-{name}", **(defaults or {})})
    # Not tuning but the loop's correctness: it commits itself, with metadata, only what is
    # acknowledged; librdkafka's auto-commit would also skip partitions that did not move.
    config["enable.auto.commit"] = False
    return config


class ConfluentKafkaIO:
    """`KafkaIO` on librdkafka: one group consumer and one `ReliableProducer`.

    `consumer_defaults` / `producer_defaults` are the service's tuning; `KafkaSettings`'s
    `consumer_overrides` / `producer_overrides` (an operator's) are applied over them. Offsets are
    never auto-committed: the loop commits, with metadata, when its work is acknowledged.
    """

    def __init__(self, kafka: KafkaSettings, *, group_id: str, name: str,
                 consumer_defaults: dict[str, Any] | None = None,
                 producer_defaults: dict[str, Any] | None = None) -> None:
        self._on_assign: PartitionsCallback | None = None
        self._on_revoke: PartitionsCallback | None = None
        self._on_committed: CommitCallback | None = None
        config = group_consumer_config(kafka, group_id=group_id, name=name,
                                       defaults=consumer_defaults)
        config["on_commit"] = self._committed
        self._consumer = Consumer(config, logger=client_logger(name))
        #: The producer, shared with the DLQ writer (one queue, one set of delivery callbacks).
        self.producer = ReliableProducer(kafka, name=name, **(producer_defaults or {}))
        #: Bound once: `produce` is called for every record the loop writes.
        self.produce = self.producer.produce

    def subscribe(self, topics: Sequence[str], *, on_assign: PartitionsCallback,
                  on_revoke: PartitionsCallback, on_committed: CommitCallback) -> None:
        self._on_assign, self._on_revoke, self._on_committed = on_assign, on_revoke, on_committed
        self._consumer.subscribe(list(topics), on_assign=self._assigned,
                                 on_revoke=self._revoked)

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        return self._consumer.consume(max_records, timeout_s)

    def pause(self, partitions: Sequence[Partition]) -> None:
        self._consumer.pause([TopicPartition(t, p) for t, p in partitions])

    def resume(self, partitions: Sequence[Partition]) -> None:
        self._consumer.resume([TopicPartition(t, p) for t, p in partitions])

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(TopicPartition(partition[0], partition[1], offset))

    def assignment(self) -> list[Partition]:
        return [(tp.topic, tp.partition) for tp in self._consumer.assignment()]

    def committed(self, partitions: Sequence[Partition], timeout_s: float) -> list[Position]:
        answer = self._consumer.committed([TopicPartition(t, p) for t, p in partitions],
                                          timeout=timeout_s)
        return [Position(tp.topic, tp.partition, tp.offset, tp.metadata or "") for tp in answer]

    def commit(self, positions: Sequence[Position], *, asynchronous: bool) -> None:
        offsets = [TopicPartition(p.topic, p.partition, p.offset, metadata=p.metadata)
                   for p in positions]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)  # -> _committed
            else:
                self._committed(None, self._consumer.commit(offsets=offsets,
                                                            asynchronous=False) or [])
        except KafkaException as exc:  # e.g. the partitions were just revoked
            if self._on_committed is not None:
                self._on_committed(str(exc), [(p.topic, p.partition) for p in positions])

    def poll(self, timeout_s: float = 0.0) -> int:
        return self.producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout_s)

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            try:
                self.producer.close()
            except DeliveryError as exc:  # their offsets were not committed: read again
                log.warning("%s", exc)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign([(tp.topic, tp.partition) for tp in partitions])

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is not None:
            self._on_revoke([(tp.topic, tp.partition) for tp in partitions])

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if self._on_committed is None:
            return
        failed = partitions if err is not None else [tp for tp in partitions if tp.error]
        self._on_committed(None if err is None else str(err),
                           [(tp.topic, tp.partition) for tp in failed])
