"""How many jobs the sender has outstanding, and how many it pushed lately: what its
unrecorded window is a share of.

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

Pushed lately = the pushes the loop made in the last RECENT_S (counted at housekeeping, every
0.1 s, from a running total the loop bumps per push). The outstanding count falls as a run
drains, and a window that followed it alone shrank to its floor for the run's last part, where
the pushes of the recent past are still the same run's pushes: the window keeps its size to the
end (docs/bounds.md).
"""

from __future__ import annotations

import json
import logging
from collections import deque

log = logging.getLogger(__name__)

#: librdkafka's statistics.interval.ms for the sender's consumer: how stale the count may be.
STATS_INTERVAL_MS = 100
#: How far back the pushes the window is also a share of reach (seconds).
RECENT_S = 60.0


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


class RecentPushes:
    """The pushes of the last `span_s`, from a running total sampled by the loop (`mark`).

    `count(total)` covers from the oldest sample within the span: never more than the pushes
    made in the last `span_s` (the first samples' interval less, at most)."""

    __slots__ = ("_marks", "_span_s")

    def __init__(self, span_s: float = RECENT_S) -> None:
        self._span_s = span_s
        #: (monotonic seconds, running total then), oldest first, all within the span.
        self._marks: deque[tuple[float, int]] = deque()

    def mark(self, now: float, total: int) -> None:
        """Sample the running total (the loop's housekeeping, every 0.1 s)."""
        marks = self._marks
        marks.append((now, total))
        oldest = now - self._span_s
        while marks[0][0] < oldest:
            marks.popleft()

    def count(self, total: int) -> int:
        """Pushes since the oldest sample within the span (0 before the first sample)."""
        return total - self._marks[0][1] if self._marks else 0
