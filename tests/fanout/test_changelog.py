"""The registry's changelog carries the DeviceRecord Avro the registry topic gets, and still reads
the JSON records a fan-out from before wrote (services/fanout/changelog.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from faust.types import TP, Message

from services.common.serde import AvroSerde
from services.fanout.changelog import DeviceRecordCodec, TableWriter, to_json
from services.fanout.faust_compat import App
from services.fanout.registry import Record, apply_checkin
from services.fanout.store import SCHEME, value_loads
from tests.fanout.harness import AT, enroll

SERDE = AvroSerde()
REGISTRY_TOPIC = "mdm.device.registry.v1"


def _record() -> Record:
    record: Record | None = None
    for event in enroll("E1"):
        record = apply_checkin(record, event, AT + 5) or record
    assert record is not None and record["state"] == "ENROLLED"
    return record


def _writers() -> tuple[TableWriter, TableWriter]:
    app = App("changelog-test", store=f"{SCHEME}://", web_enabled=False, autodiscover=False)
    registry = TableWriter(app.Table("registry", partitions=2),
                           DeviceRecordCodec(SERDE, REGISTRY_TOPIC))
    return registry, TableWriter(app.Table("carriers", partitions=2))


def _changelog_message(topic: str, key: str, value: bytes) -> Message:
    return Message(topic, 0, 7, AT / 1000, 0, [], to_json(key), value, None)


def test_the_changelog_value_is_the_registry_topics_record() -> None:
    record = _record()
    codec = DeviceRecordCodec(SERDE, REGISTRY_TOPIC)
    encoded = codec.dumps(record)
    assert encoded == SERDE.encode("DeviceRecord", record, REGISTRY_TOPIC)
    assert codec.loads(encoded) == record


def test_a_json_record_written_before_reads_as_the_same_record() -> None:
    record = _record()
    codec = DeviceRecordCodec(SERDE, REGISTRY_TOPIC)
    legacy = codec.loads(to_json(record))
    assert legacy == record
    # Field names shared with every other record read (not one copy per record).
    other = codec.loads(to_json({**record, "enrollment_id": "E2"}))
    assert all(a is b for a, b in zip(legacy, other, strict=True))


def test_faust_reads_the_registry_changelog_in_either_format() -> None:
    """faust's own recovery (what the store did not read itself) decodes with the changelog
    topic's codec: the table's topic carries the codec, the other tables' stay JSON."""
    registry, carriers = _writers()
    record = _record()
    topic = registry._table.changelog_topic
    for value in (SERDE.encode("DeviceRecord", record, REGISTRY_TOPIC), to_json(record)):
        event = asyncio.run(topic.decode(_changelog_message(registry.changelog, "E1", value),
                                         propagate=True))
        assert (event.key, event.value) == ("E1", record)
    held: dict[str, Any] = {"job_id": "r/E1", "expires_at": AT}
    event = asyncio.run(carriers._table.changelog_topic.decode(
        _changelog_message(carriers.changelog, "E1", to_json(held)), propagate=True))
    assert event.value == held


def test_the_store_reads_each_changelog_with_its_tables_codec() -> None:
    registry, carriers = _writers()
    record = _record()
    loads = value_loads(registry._table.changelog_topic.value_serializer)  # type: ignore[attr-defined]
    assert loads(SERDE.encode("DeviceRecord", record, REGISTRY_TOPIC)) == record
    assert loads(json.dumps(record).encode()) == record
    carrier = value_loads(carriers._table.changelog_topic.value_serializer)  # type: ignore[attr-defined]
    assert carrier(b'{"job_id":"r/E1"}') == {"job_id": "r/E1"}


def test_writes_land_in_the_stores_dict_and_the_offset_moves() -> None:
    registry, _ = _writers()
    record = _record()
    queued: list[tuple[str, bytes | None, bytes | str, int | None]] = []

    class Out:
        def produce(self, topic: str, value: bytes | None, key: bytes | str,
                    partition: int | None = None) -> None:
            queued.append((topic, value, key, partition))

    encoded = SERDE.encode("DeviceRecord", record, REGISTRY_TOPIC)
    registry.put(Out(), "E1", record, 1, encoded)  # type: ignore[arg-type]
    assert registry._table.data["E1"] == record
    assert queued == [(registry.changelog, encoded, b'"E1"', 1)]
    registry.acknowledged(1, 41)
    store: Any = registry._table.data
    assert store.persisted_offset(TP(registry.changelog, 1)) == 41
    registry.delete(Out(), "E1", 1)  # type: ignore[arg-type]
    assert "E1" not in registry._table.data and queued[-1] == (registry.changelog, None,
                                                                 b'"E1"', 1)
