"""Writes to a faust table through librdkafka: the value in memory, its changelog record queued.

The table's own write path costs ~100 µs of Python per record through faust's producer, and
takes the partition from the event being handled (wrong inside a batch mixing partitions).
librdkafka queues the same changelog record (the partition given explicitly) in a few µs; the
caller awaits the producer's flush before acking the input that caused the write, so no offset
is committed past an unsaved change. A record with a null value deletes the key (faust's memory
store does the same).

Keys are JSON, as faust's codec reads them. Values are JSON too, except the registry's: its
changelog carries each record as the DeviceRecord Avro the registry topic gets
(`DeviceRecordCodec`), so one encoding serves both topics (JSON was ~30 % of the registry's
ingestion, twice the Avro encode). A changelog written by a fan-out from before holds JSON
records: they are still read, at recovery (store.py) and by faust (the changelog topic's codec),
and replaced as their enrollments next change (the topic is compacted).
"""

from __future__ import annotations

import json
import sys
from typing import Any, cast

from faust.serializers.codecs import Codec
from faust.tables import Table
from faust.types import TP, StoreT, TableT, TopicT

from services.common.serde import AvroSerde
from services.fanout.output import BatchProducer

_encode = json.JSONEncoder(separators=(",", ":")).encode


def to_json(value: Any) -> bytes:
    """A key or value as faust's JSON codec reads it back at recovery."""
    return _encode(value).encode()


def from_json(raw: bytes) -> Any:
    """A JSON changelog value, a record's field names shared with every other record's (json
    makes one copy per record: ~600 bytes of every enrollment at 1,000,000)."""
    value = json.loads(raw)
    if isinstance(value, dict):
        intern = sys.intern
        return {intern(name): field for name, field in value.items()}
    return value


class DeviceRecordCodec(Codec):
    """The registry changelog's values: a DeviceRecord in the registry topic's Avro; a JSON one
    (written before) is read as well. Both wire formats of the serde start with a byte JSON
    never does (`00`, `C3`), a JSON record always with `{`."""

    def __init__(self, serde: AvroSerde, topic: str, **kwargs: Any) -> None:
        """`topic`: the registry topic, whose schema-registry subject the encoding uses."""
        super().__init__(serde=serde, topic=topic, **kwargs)
        self.serde = serde
        self.topic = topic

    def _loads(self, s: bytes) -> Any:
        if s[:1] == b"{":
            return from_json(s)
        return self.serde.decode_as(s, "DeviceRecord")

    def _dumps(self, s: Any) -> bytes:
        return self.serde.encode("DeviceRecord", s, self.topic)


class TableWriter:
    """Write-through access to one faust table of the fan-out."""

    def __init__(self, table: TableT[str, Any], codec: Codec | None = None) -> None:
        """`codec`: of the changelog values (JSON if None). faust reads the changelog (its
        recovery of what the store did not read) with the changelog topic's codec, so the table
        gets a topic derived from its own with `codec` (faust made it, with JSON, when the table
        was added to the app; it is used from the app's start)."""
        if codec is not None:
            cast(Table, table).value_serializer = codec
            table.changelog_topic = cast(TopicT, table.changelog_topic.derive(
                value_serializer=codec))
        self._table = table
        self.changelog = table.changelog_topic.get_topic_name()
        self._dumps = codec.dumps if codec is not None else to_json
        self._local: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The table's local contents: the memory store's own dict (the store, a Mapping,
        costs a few µs per lookup through its abstract methods; created when first asked for)."""
        if self._local is None:
            self._local = self._table.data.data  # type: ignore[attr-defined]
        return self._local

    def put(self, out: BatchProducer, key: str, value: Any, partition: int,
            encoded: bytes | None = None) -> None:
        """Set `key` in memory and queue its changelog record on `out` (`encoded`: the value
        already encoded by the table's codec)."""
        self.data[key] = value
        out.produce(self.changelog, encoded if encoded is not None else self._dumps(value),
                    to_json(key), partition)

    def acknowledged(self, partition: int, offset: int) -> None:
        """Kafka holds this table's changelog up to `offset` of `partition`: the store may start
        its next recovery of that partition there (services/fanout/store.py)."""
        store: StoreT[Any, Any] = self._table.data  # type: ignore[assignment]
        store.set_persisted_offset(TP(self.changelog, partition), offset)

    def delete(self, out: BatchProducer, key: str, partition: int) -> None:
        """Remove `key` and queue its tombstone on `out` (nothing if it is absent)."""
        if self.data.pop(key, None) is not None:
            out.produce(self.changelog, None, to_json(key), partition)
