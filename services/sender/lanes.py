"""In-memory lanes between Kafka and APNs: priority always first, bounded by pausing partitions.

Jobs wait here per buffer lane and per key (certificate[#shard]) so a throttled key never blocks
another key, and the priority lane is always served before bulk. Each source partition may hold
at most `cap` waiting jobs: beyond that the loop pauses it (librdkafka also drops what it had
prefetched for it), and resumes it when half has drained. A bulk backlog thus never fills memory
nor the consumer's queue, and a priority record is never queued behind thousands of bulk ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from services.sender.offsets import Entry

#: Buffer lanes in service order. Due bulk retries come before fresh bulk jobs: they are older,
#: and their tier delay is already the wait they were promised. Both use the bulk bucket.
LANES = ("PRIORITY", "RETRY", "BULK")


class Pending:
    """A decoded job waiting to be sent, with the consumed record it must finish."""

    __slots__ = ("entry", "job", "key", "lane", "source")

    def __init__(
        self, entry: Entry, job: dict[str, Any], key: str, lane: str, source: tuple[str, int]
    ) -> None:
        self.entry = entry
        self.job = job
        self.key = key
        self.lane = lane
        self.source = source


class LaneBuffers:
    """Waiting jobs per lane and key, with per-partition counts for back-pressure."""

    def __init__(self, cap_per_partition: int) -> None:
        self.cap = max(1, cap_per_partition)
        self._lanes: dict[str, dict[str, deque[Pending]]] = {lane: {} for lane in LANES}
        self._per_source: dict[tuple[str, int], int] = {}
        #: Partitions paused because they hold `cap` jobs here.
        self.paused: set[tuple[str, int]] = set()
        self.size = 0

    def add(self, item: Pending) -> bool:
        """Queue a job; True when its source partition just reached the cap (pause it)."""
        queue = self._lanes[item.lane].get(item.key)
        if queue is None:
            queue = self._lanes[item.lane][item.key] = deque()
        queue.append(item)
        count = self._per_source.get(item.source, 0) + 1
        self._per_source[item.source] = count
        self.size += 1
        return count >= self.cap and item.source not in self.paused

    def queues(self, lane: str) -> Iterator[tuple[str, deque[Pending]]]:
        """(key, queue) of every non-empty queue of a lane, least recently served first."""
        lane_queues = self._lanes[lane]
        for key in [k for k, q in lane_queues.items() if not q]:
            del lane_queues[key]
        return iter(list(lane_queues.items()))

    def served(self, lane: str, key: str) -> None:
        """Move `key` behind the other keys of its lane: `queues` lists the least recently
        served key first, so small dispatch budgets still go round every key."""
        lane_queues = self._lanes[lane]
        queue = lane_queues.pop(key, None)
        if queue is not None:
            lane_queues[key] = queue

    def has(self, lane: str) -> bool:
        return any(self._lanes[lane].values())

    def taken(self, item: Pending) -> bool:
        """Account for a job popped from its queue; True when its paused source may resume."""
        self.size -= 1
        count = self._per_source[item.source] - 1
        self._per_source[item.source] = count
        return item.source in self.paused and count <= self.cap // 2

    def drop_source(self, source: tuple[str, int]) -> None:
        """Forget the jobs of a partition taken away by a rebalance (they are not lost: their
        offsets were not stored, the new owner reads them again)."""
        for lane_queues in self._lanes.values():
            for key, queue in list(lane_queues.items()):
                kept = deque(item for item in queue if item.source != source)
                self.size -= len(queue) - len(kept)
                lane_queues[key] = kept
        self._per_source.pop(source, None)
        self.paused.discard(source)

    def clear(self) -> None:
        for lane_queues in self._lanes.values():
            lane_queues.clear()
        self._per_source.clear()
        self.paused.clear()
        self.size = 0
