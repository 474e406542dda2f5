"""The registry as readers outside the fan-out see it: the latest DeviceRecord per enrollment,
from the compacted `mdm.device.registry.v1` the fan-out publishes (the fan-out's own table is
not reachable from other processes; the topic is the contract every reader uses)."""

from __future__ import annotations

from typing import Any

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.common.snapshot import read_topic

DeviceRecord = dict[str, Any]


def load_registry(
    settings: KafkaSettings, enrollment_id: str | None = None
) -> dict[str, DeviceRecord]:
    """Enrollment id -> latest DeviceRecord (tombstoned enrollments are absent).

    With `enrollment_id`, only that key is decoded: the scan stays cheap on a large fleet.
    """
    topic = Topics(settings.topic_prefix).registry
    latest: dict[str, DeviceRecord] = {}
    for rec in read_topic(settings, topic, "DeviceRecord", key=enrollment_id).records:
        key = rec.key or (rec.value or {}).get("enrollment_id")
        if key is None:
            continue
        if rec.value is None:
            latest.pop(key, None)
        else:
            latest[key] = rec.value
    return latest


def records_of_udid(registry: dict[str, DeviceRecord], udid: str) -> list[DeviceRecord]:
    """Every enrollment of one device, live ones first, newest first.

    More than one live record for a UDID is the duplicate-enrollment case of the Apple seed: a
    re-enrollment whose CheckOut was lost, pushed with the old enrollment's PushMagic.
    """
    found = [r for r in registry.values() if r.get("udid") == udid]
    return sorted(found, key=lambda r: (r["state"] != "CHECKED_OUT", r["updated_at"]), reverse=True)
