"""The registry for `doctor sysdiagnose`, or one sentence saying why it could not be read.

The device's own values are worth showing even when Kafka is out of reach, so an unreachable
broker or a missing registry topic is not an error here: the comparison is skipped, with the
reason (see :mod:`services.doctor.probe`, which finds out within a fraction of a second instead
of the registry read's 30 s timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.catalogue import Topics
from services.common.errors import TopicReadError
from services.common.registry_view import DeviceRecord, load_registry
from services.common.settings import KafkaSettings
from services.doctor.probe import PROBE_TIMEOUT_S, probe


@dataclass(frozen=True, slots=True)
class RegistryLookup:
    """Either the registry (enrollment id -> record) or why it could not be read."""

    registry: dict[str, DeviceRecord] | None
    skipped_because: str | None = None


def lookup_registry(settings: KafkaSettings, probe_timeout_s: float = PROBE_TIMEOUT_S
                    ) -> RegistryLookup:
    """The whole registry (other enrollments of the same UDID are the evidence of a stale
    PushMagic), or the reason the comparison has to be skipped."""
    why = probe(settings, [Topics(settings.topic_prefix).registry], probe_timeout_s)
    if why is not None:
        return RegistryLookup(None, why)
    try:
        return RegistryLookup(load_registry(settings))
    except TopicReadError as exc:
        return RegistryLookup(None, str(exc))
