"""An in-memory `KafkaIO` for unit tests of a loop's rules: no broker, no threads, no waiting.

`MemoryBroker` holds topics (partitions of `MemoryRecord`s, which answer the `Record` methods as
confluent's `Message` does) and each group's committed positions with their metadata.
`MemoryKafkaIO` is one group member on it. It behaves as librdkafka does where the loop's rules
depend on it, and is driven step by step by the test:

- rebalance callbacks, commit answers and delivery results run inside `consume`/`poll`, never
  at the call that caused them (`hold_deliveries` keeps delivery results back until released);
- a paused partition hands out nothing; `resume` continues at the consumed position or at the
  last `seek`; a pause outlives a rebalance, also when the partition is assigned back (librdkafka
  keeps its pause flag: tests/sender/test_pause_rebalance_kafka.py);
- `refuse(topic, error)` makes Kafka refuse records to a topic (their delivery callback gets the
  error), `fail_commits` makes commits fail; `rebalance()` takes partitions away and back.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Sequence
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message

from services.common.kafka.io import (
    NO_OFFSET,
    CommitCallback,
    Partition,
    PartitionsCallback,
    Position,
    Record,
)
from services.common.kafka.producer import DeliveryCallback, Headers


class MemoryRecord:
    """A stored record: what `Record` promises, nothing more (no per-record cost to speak of)."""

    __slots__ = ("_error", "_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: list[tuple[str, str | bytes | None]] | None,
                 error: KafkaError | None = None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers, self._error = key, value, headers, error

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, str | bytes | None]] | None:
        return self._headers

    def error(self) -> KafkaError | None:
        return self._error


class MemoryBroker:
    """Topics of partitions of records, and every group's committed positions."""

    def __init__(self) -> None:
        self._topics: dict[str, list[list[MemoryRecord]]] = {}
        self._commits: dict[str, dict[Partition, Position]] = {}

    def create_topic(self, name: str, partitions: int = 1) -> None:
        self._topics.setdefault(name, [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        return len(self._topics.get(topic, ()))

    def append(self, topic: str, value: bytes | None, key: str | bytes | None = None,
               headers: Headers | None = None, partition: int | None = None) -> MemoryRecord:
        """Store a record (partition None: by key, as a partitioner would); returns it."""
        if topic not in self._topics:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        log = self._topics[topic]
        raw_key = key.encode() if isinstance(key, str) else key
        if partition is None:
            partition = zlib.crc32(raw_key or b"") % len(log)
        record = MemoryRecord(topic, partition, len(log[partition]), raw_key, value,
                              list(headers) if headers else None)
        log[partition].append(record)
        return record

    def records(self, topic: str, partition: int | None = None) -> list[MemoryRecord]:
        """Every record of a topic (of one partition, if given), in offset order per partition."""
        logs = self._topics.get(topic, [])
        if partition is not None:
            return list(logs[partition])
        return [record for log in logs for record in log]

    def read(self, partition: Partition, offset: int, count: int) -> list[MemoryRecord]:
        return self._topics[partition[0]][partition[1]][offset:offset + count]

    def commit(self, group: str, position: Position) -> None:
        self._commits.setdefault(group, {})[(position.topic, position.partition)] = position

    def committed(self, group: str, partition: Partition) -> Position:
        found = self._commits.get(group, {}).get(partition)
        return found or Position(partition[0], partition[1], NO_OFFSET)


class MemoryKafkaIO:
    """One member of `group` on a `MemoryBroker`; see the module docstring."""

    def __init__(self, broker: MemoryBroker, group: str = "group") -> None:
        self.broker = broker
        self.group = group
        self._topics: list[str] = []
        self._on_assign: PartitionsCallback | None = None
        self._on_revoke: PartitionsCallback | None = None
        self._on_committed: CommitCallback | None = None
        #: Consumed position (next offset handed out) of each assigned partition.
        self._positions: dict[Partition, int] = {}
        self.paused: set[Partition] = set()
        #: Rebalance events still to be served: ("assign" | "revoke", partitions).
        self._rebalances: deque[tuple[str, list[Partition]]] = deque()
        self._commit_answers: deque[tuple[str | None, list[Partition]]] = deque()
        self._deliveries: deque[tuple[DeliveryCallback, KafkaError | None, MemoryRecord]] = (
            deque())
        #: True: delivery results wait until `release_deliveries` (records still unacknowledged).
        self.hold_deliveries = False
        self.fail_commits: str | None = None
        self._refused: dict[str, KafkaError] = {}
        self._raises: dict[str, Exception] = {}
        self.closed = False
        #: Every commit made, in order (tests check what was committed when).
        self.commits: list[Position] = []

    # -- test controls ---------------------------------------------------------------------------
    def refuse(self, topic: str, error: KafkaError | None) -> None:
        """Records to `topic` are refused with `error` from now on (None: accepted again)."""
        if error is None:
            self._refused.pop(topic, None)
        else:
            self._refused[topic] = error

    def raise_on_produce(self, topic: str, exc: Exception | None) -> None:
        """`produce` to `topic` raises `exc` (e.g. PermanentDeliveryError) from now on."""
        if exc is None:
            self._raises.pop(topic, None)
        else:
            self._raises[topic] = exc

    def release_deliveries(self) -> None:
        self.hold_deliveries = False

    def rebalance(self, revoke: Sequence[Partition] | None = None,
                  assign: Sequence[Partition] | None = None) -> None:
        """Take partitions away (default: all) and give some (default: the same) back; the
        callbacks run in the next `consume`, revoke first."""
        taken = list(self._positions) if revoke is None else list(revoke)
        self._rebalances.append(("revoke", taken))
        self._rebalances.append(("assign", taken if assign is None else list(assign)))

    @property
    def pending_deliveries(self) -> int:
        return len(self._deliveries)

    # -- KafkaIO ---------------------------------------------------------------------------------
    def subscribe(self, topics: Sequence[str], *, on_assign: PartitionsCallback,
                  on_revoke: PartitionsCallback, on_committed: CommitCallback) -> None:
        self._topics = list(topics)
        self._on_assign, self._on_revoke, self._on_committed = on_assign, on_revoke, on_committed
        every = [(t, p) for t in self._topics for p in range(self.broker.partitions(t))]
        self._rebalances.append(("assign", every))

    def consume(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        self._serve_rebalances()
        self._serve_commit_answers()
        out: list[MemoryRecord] = []
        for partition, position in self._positions.items():
            if partition in self.paused or len(out) >= max_records:
                continue
            batch = self.broker.read(partition, position, max_records - len(out))
            self._positions[partition] = position + len(batch)
            out.extend(batch)
        return out

    def pause(self, partitions: Sequence[Partition]) -> None:
        self.paused.update(p for p in partitions if p in self._positions)

    def resume(self, partitions: Sequence[Partition]) -> None:
        self.paused.difference_update(partitions)

    def seek(self, partition: Partition, offset: int) -> None:
        if partition in self._positions:
            self._positions[partition] = offset

    def assignment(self) -> list[Partition]:
        return list(self._positions)

    def committed(self, partitions: Sequence[Partition], timeout_s: float) -> list[Position]:
        return [self.broker.committed(self.group, p) for p in partitions]

    def commit(self, positions: Sequence[Position], *, asynchronous: bool) -> None:
        if self.fail_commits is not None:
            answer: tuple[str | None, list[Partition]] = (
                self.fail_commits, [(p.topic, p.partition) for p in positions])
        else:
            for position in positions:
                self.broker.commit(self.group, position)
                self.commits.append(position)
            answer = (None, [])
        if asynchronous:
            self._commit_answers.append(answer)
        elif self._on_committed is not None:
            self._on_committed(*answer)

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                headers: Headers | None = None, partition: int | None = None,
                on_delivery: DeliveryCallback | None = None) -> None:
        if topic in self._raises:
            raise self._raises[topic]
        error = self._refused.get(topic)
        if error is None:
            record = self.broker.append(topic, value, key, headers, partition)
        else:
            raw_key = key.encode() if isinstance(key, str) else key
            record = MemoryRecord(topic, -1, -1, raw_key, value, None, error)
        if on_delivery is not None:
            self._deliveries.append((on_delivery, error, record))

    def poll(self, timeout_s: float = 0.0) -> int:
        if self.hold_deliveries:
            return 0
        served = 0
        while self._deliveries:
            callback, error, record = self._deliveries.popleft()
            # A delivery callback reads the record through the `Record` methods only.
            callback(error, cast(Message, record))
            served += 1
        return served

    def flush(self, timeout_s: float) -> None:
        self.poll(0)

    def close(self) -> None:
        self.closed = True
        self._positions.clear()

    # -- internals -------------------------------------------------------------------------------
    def _serve_rebalances(self) -> None:
        while self._rebalances:
            kind, partitions = self._rebalances.popleft()
            if kind == "revoke":
                if self._on_revoke is not None and partitions:
                    self._on_revoke(partitions)
                for partition in partitions:
                    self._positions.pop(partition, None)
            else:
                for partition in partitions:
                    committed = self.broker.committed(self.group, partition).offset
                    self._positions[partition] = max(0, committed)
                if self._on_assign is not None:
                    self._on_assign(partitions)

    def _serve_commit_answers(self) -> None:
        while self._commit_answers:
            error, failed = self._commit_answers.popleft()
            if self._on_committed is not None:
                self._on_committed(error, failed)

