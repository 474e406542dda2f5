"""Read one topic from the beginning up to its high watermarks, once, without a consumer group.

Snapshots answer questions about the past ("every push to this enrollment"), so they assign
every partition itself instead of joining a group: nothing is committed, nothing is rebalanced,
and it stops as soon as each partition reaches the high watermark it had when the read began.
Records whose key is not the one asked for are skipped before decoding, which keeps a scan of a
large topic cheap; records that cannot be decoded are counted, not fatal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.common.errors import DecodeError, TopicReadError
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True, slots=True)
class KeyedRecord:
    """One record as read: its key, and its value (None for a compaction tombstone)."""

    key: str | None
    value: dict[str, Any] | None


@dataclass(slots=True)
class TopicRead:
    """The records of one scan in partition-offset order, and how many could not be decoded."""

    topic: str
    records: list[KeyedRecord] = field(default_factory=list)
    undecodable: int = 0


def read_topic(
    settings: KafkaSettings,
    topic: str,
    schema: str,
    key: str | None = None,
    serde: AvroSerde | None = None,
    timeout_s: float = 30.0,
) -> TopicRead:
    """Every record of `topic` (only those keyed `key` when given), decoded as `schema`."""
    serde = serde or serde_for(settings)
    wanted = key.encode() if key is not None else None
    consumer = Consumer(settings.consumer_config(
        "mdmpush-doctor", **{"enable.auto.commit": False, "enable.partition.eof": True}))
    try:
        ends, nexts = _assign_from_beginning(consumer, settings, topic, timeout_s)
        result = TopicRead(topic)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise TopicReadError(f"reading {topic} did not finish within {timeout_s:.0f}s")
            # Ask for no more than can still come: a batch call waits for a full batch.
            remaining = sum(ends[p] - nexts[p] for p in ends)
            for msg in consumer.consume(num_messages=min(BATCH, remaining), timeout=0.5):
                partition = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends.pop(partition, None)
                    else:
                        log.warning("reading %s: %s", topic, err)
                    continue
                offset = msg.offset()
                end = ends.get(partition)
                if end is None or offset is None or offset >= end:
                    continue  # written after the scan began: not part of this snapshot
                nexts[partition] = offset + 1
                if offset >= end - 1:
                    del ends[partition]
                raw_key = msg.key()
                if wanted is not None and raw_key != wanted:
                    continue
                _append(result, serde, schema, raw_key, msg.value())
        if result.undecodable:
            log.warning("%s: skipped %d undecodable record(s)", topic, result.undecodable)
        return result
    finally:
        consumer.close()


def _assign_from_beginning(
    consumer: Consumer, settings: KafkaSettings, topic: str, timeout_s: float
) -> tuple[dict[int, int], dict[int, int]]:
    """Assign every non-empty partition at its low watermark; returns partition -> high and
    partition -> low watermark."""
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise TopicReadError(f"topic {topic} does not exist on {settings.bootstrap_servers} "
                              f"(is MDMPUSH_KAFKA_TOPIC_PREFIX right?)")
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
                starts[partition] = low
    except KafkaException as exc:
        raise TopicReadError(
            f"Kafka at {settings.bootstrap_servers} did not answer: {exc}"
        ) from exc
    consumer.assign([TopicPartition(topic, p, low) for p, low in starts.items()])
    return ends, starts


def _append(
    result: TopicRead, serde: AvroSerde, schema: str, key: bytes | None, value: bytes | None
) -> None:
    text_key = key.decode(errors="replace") if key is not None else None
    if value is None:
        result.records.append(KeyedRecord(text_key, None))
        return
    try:
        result.records.append(KeyedRecord(text_key, serde.decode_as(value, schema)))
    except DecodeError as exc:
        log.debug("%s: undecodable record: %s", result.topic, exc.reason)
        result.undecodable += 1
