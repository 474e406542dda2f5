"""Which enrollments the correlator marked INACTIVE, from the compacted
`mdm.enrollment.activity.v1` (contract: docs/coalescing.md, "Inactive enrollments").

The correlator writes INACTIVE when an enrollment has been silent longer than its
`inactive_after`, and ACTIVE when it next contacts. Every worker reads the whole topic (it is
keyed by enrollment id with the client's partitioner, not the fan-out's registry partitioning)
and keeps only the state per enrollment. Expansion turns a bulk target that is INACTIVE into
SKIPPED `inactive`; priority targets are pushed anyway (a user action is worth a try).
An undecodable record is counted as `mdmpush_fanout_poison_total{input="activity"}` and skipped.
"""

from __future__ import annotations

import sys

from confluent_kafka import Message

from services.common.kafka.compacted import CompactedView
from services.common.limits import check_enrollment_id
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.fanout import metrics
from services.fanout.views import ViewThread

#: The view's fallback key: no enrollment id may hold a NUL (services/common/limits.py), so no
#: record's state ever answers for another enrollment.
_NO_FALLBACK = "\x00"


class ActivityBook(ViewThread[str]):
    """The latest activity state ("ACTIVE" / "INACTIVE") per enrollment id."""

    def __init__(self, kafka: KafkaSettings, topic: str, serde: AvroSerde) -> None:
        def decode(value: bytes) -> str:
            record = serde.decode_as(value, "EnrollmentActivity")
            check_enrollment_id(record["enrollment_id"])
            # Interned: a million enrollments share two strings.
            return sys.intern(str(record["state"]))

        super().__init__(CompactedView(kafka, topic, decode, name="fanout-activity",
                                       fallback_key=_NO_FALLBACK,
                                       on_undecodable=_count_poison), "activity")

    def inactive(self, enrollment_id: str) -> bool:
        return self.view.get(enrollment_id) == "INACTIVE"


def _count_poison(_msg: Message, _exc: Exception) -> None:
    metrics.POISON.labels("activity").inc()
