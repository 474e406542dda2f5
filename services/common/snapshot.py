"""One topic read from the beginning up to its high watermarks, decoded: the doctor's snapshots.

Snapshots answer questions about the past ("every push to this enrollment"), so they read with
`read_to_end` (services/common/kafka/reader.py): no group, nothing committed, nothing
rebalanced, and it stops as soon as each partition reaches the end it had when the read began.
Records whose key is not the one asked for are skipped before decoding, which keeps a scan of a
large topic cheap; records that cannot be decoded are counted, not fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import DecodeError
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


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
    """Every record of `topic` (only those keyed `key` when given), decoded as `schema`.

    TopicReadError (one line) when the topic does not exist or Kafka does not answer."""
    serde = serde or serde_for(settings)
    wanted = key.encode() if key is not None else None
    result = TopicRead(topic)
    for msg in read_to_end(settings, topic, timeout_s=timeout_s, name="snapshot"):
        raw_key = msg.key()
        if wanted is None or raw_key == wanted:
            _append(result, serde, schema, raw_key, msg.value())
    if result.undecodable:
        log.warning("%s: skipped %d undecodable record(s)", topic, result.undecodable)
    return result


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
