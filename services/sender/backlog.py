"""How many jobs the sender has outstanding: what its unrecorded window is a share of.

A crash repeats the pushes whose outcome Kafka had not acknowledged (offsets.py); the loop keeps
them under a window that grows with the work in hand — a share of the jobs outstanding, never
less than a floor — so that what a crash repeats is a share of what was left to do, whatever the
rate, the load or the moment of the kill, while a large backlog still drains at full speed.

Outstanding = for every partition assigned to the sender, the partition's end minus its
committed offset: jobs waiting, buffered, on the wire or finished but not yet committed. Counted
from librdkafka's statistics (the consumer's `stats_cb`, every STATS_INTERVAL_MS), so the loop
pays nothing per record: a partition's end is what its last fetch saw (a paused partition's may
be older: the count is then lower, and so is the window — never a larger repeat), the committed
offset the last one Kafka acknowledged.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

#: librdkafka's statistics.interval.ms for the sender's consumer: how stale the count may be.
STATS_INTERVAL_MS = 100


class Backlog:
    """The outstanding jobs of the partitions assigned to one consumer, from its statistics."""

    __slots__ = ("jobs",)

    def __init__(self) -> None:
        #: None until the first statistics arrive.
        self.jobs: int | None = None

    def update(self, stats_json: str) -> None:
        """librdkafka's `stats_cb` (served from the consumer's poll, on the loop's thread)."""
        try:
            topics = json.loads(stats_json).get("topics", {})
            total = 0
            for topic in topics.values():
                for partition in topic.get("partitions", {}).values():
                    total += _outstanding(partition)
        except (ValueError, AttributeError, TypeError) as exc:  # never stops the loop
            log.warning("unreadable consumer statistics: %s", exc)
            return
        self.jobs = total

    def __call__(self) -> int | None:
        return self.jobs


def _outstanding(partition: dict[str, object]) -> int:
    """End minus committed offset of an assigned partition (0 if not assigned or not known)."""
    if not partition.get("desired"):
        return 0
    end = partition.get("hi_offset")
    if not isinstance(end, int) or end < 0:
        return 0
    committed = partition.get("committed_offset")
    if not isinstance(committed, int) or committed < 0:  # nothing committed yet
        low = partition.get("lo_offset")
        committed = low if isinstance(low, int) and low >= 0 else 0
    return max(0, end - committed)
