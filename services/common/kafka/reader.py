"""Read a topic from its beginning up to the end offsets it had when asked: no group, no commit.

Config topics (policies, registry snapshots) and the diagnostics need "everything the topic held
at the call", not a consumer group's position: the partitions are assigned directly, nothing is
committed, and the read stops once each partition reached the end offset it had at the start.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from services.common.errors import TopicReadError
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Records asked for per consume() call.
BATCH = 1000


def assign_from_beginning(consumer: Consumer, topic: str, timeout_s: float) -> dict[int, int]:
    """Assign every partition of `topic` from its beginning (none if the topic does not exist);
    returns partition -> end offset of the non-empty ones: once each is read up to its end,
    everything the topic held at the call has been read (the config readers' "loaded")."""
    try:
        positions = _positions(consumer, topic, None, None, timeout_s)
    except TopicReadError:  # not created yet: nothing to read, and nothing assigned
        positions = {}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in positions])
    return {p: end for p, (start, end) in positions.items() if end > start}


def reader_consumer(kafka: KafkaSettings, name: str) -> Consumer:
    """A consumer for direct assignment: never commits, its group id is unique and unused."""
    return Consumer(
        kafka.consumer_config(
            f"mdmpush-{name}-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False}),
        logger=client_logger(name),
    )


def assign_from_time(
    consumer: Consumer, topic: str, since_ms: int | None, timeout_s: float
) -> dict[int, int]:
    """Assign every partition of `topic` at its first record written at or after `since_ms`
    (the beginning when None, the end when no record is that new); returns partition -> end
    offset at the call, for the partitions that have something to read. TopicReadError when
    the topic does not exist or Kafka does not answer."""
    try:
        positions = _positions(consumer, topic, None, since_ms, timeout_s)
    except KafkaException as exc:
        raise TopicReadError(f"Kafka did not answer about {topic}: {exc.args[0]}") from exc
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in positions.items()])
    return {p: end for p, (start, end) in positions.items() if end > start}


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    since_ms: int | None = None,
    timeout_s: float = 30.0,
    name: str = "reader",
) -> Iterator[Message]:
    """Every record `topic` held when called (in `partitions`, default all; written at or after
    `since_ms` when given), in per-partition offset order, then stop. Raises TopicReadError when
    the topic does not exist, Kafka does not answer, or the read does not finish within
    `timeout_s`."""
    consumer = reader_consumer(kafka, name)
    try:
        positions = _positions(consumer, topic, partitions, since_ms, timeout_s)
        ends = {p: end for p, (start, end) in positions.items() if end > start}
        consumer.assign([TopicPartition(topic, p, positions[p][0]) for p in ends])
        nexts = {p: positions[p][0] for p in ends}  # a lower bound of each next offset
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TopicReadError(f"reading {topic} did not finish within {timeout_s:.0f}s "
                                     f"(partitions left: {sorted(ends)})")
            # Ask for no more than can still come: a batch call waits for a full batch.
            wanted = min(BATCH, max(1, sum(ends[p] - nexts[p] for p in ends)))
            batch = consumer.consume(wanted, timeout=0.2)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    log.warning("reading %s: %s", topic, err)
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                end = ends.get(partition)
                if end is None or offset >= end:
                    continue  # written after the call: not part of this read
                nexts[partition] = offset + 1
                yield msg
                if offset + 1 >= end:
                    del ends[partition]
            if not batch:
                _drop_finished(consumer, topic, ends)
    except KafkaException as exc:
        raise TopicReadError(
            f"Kafka at {kafka.bootstrap_servers} did not answer: {exc.args[0]}") from exc
    finally:
        consumer.close()


def _positions(
    consumer: Consumer,
    topic: str,
    partitions: Iterable[int] | None,
    since_ms: int | None,
    timeout_s: float,
) -> dict[int, tuple[int, int]]:
    """partition -> (offset to start at, end offset now) of the partitions to read."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        if metadata is None or metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise TopicReadError(
                f"topic {topic} does not exist (is MDMPUSH_KAFKA_TOPIC_PREFIX right?)")
        raise TopicReadError(f"topic {topic} cannot be read: {metadata.error}")
    wanted = sorted(metadata.partitions) if partitions is None else list(partitions)
    unknown = set(wanted) - set(metadata.partitions)
    if unknown:
        raise TopicReadError(f"topic {topic} has no partition(s) {sorted(unknown)}")
    found: dict[int, int] = {}
    if since_ms is not None:
        asked = [TopicPartition(topic, p, since_ms) for p in wanted]
        found = {tp.partition: tp.offset
                 for tp in consumer.offsets_for_times(asked, timeout=timeout_s)}
    positions: dict[int, tuple[int, int]] = {}
    for p in wanted:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        start = found.get(p, low)
        positions[p] = (high if start < 0 else max(start, low), high)
    return positions


def _drop_finished(consumer: Consumer, topic: str, ends: dict[int, int]) -> None:
    """A partition whose last offsets hold no record (compacted away, transaction markers) is
    finished once the consumer's position reached its end."""
    for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
        if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
            del ends[tp.partition]
