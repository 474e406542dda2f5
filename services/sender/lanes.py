"""In-memory lanes between Kafka and APNs: priority always first, bounded by pausing partitions.

Jobs wait here per lane and per key (certificate[#shard]) so a throttled key never blocks another
key, and the priority lane is always served before bulk. Each source partition may hold at most
`cap` waiting jobs: `add` says when one reaches it (the loop pauses the partition, and librdkafka
drops what it had prefetched for it) and `taken` says when it has drained to half (the loop lifts
that pause). A bulk backlog thus never fills memory nor the consumer's queue, and a priority
record is never queued behind thousands of bulk ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from services.common.kafka.io import Partition
from services.sender.job import LANES, Lane, PushJob
from services.sender.offsets import Entry


class Pending:
    """A decoded job waiting to be sent, with the consumed record it must finish."""

    __slots__ = ("entry", "job", "key", "lane", "source")

    def __init__(self, entry: Entry, job: PushJob, key: str, lane: Lane, source: Partition) -> None:
        self.entry = entry
        self.job = job
        self.key = key
        self.lane = lane
        self.source = source


class LaneBuffers:
    """Waiting jobs per lane and key, with per-partition counts for back-pressure."""

    def __init__(self, cap_per_partition: int) -> None:
        self.cap = max(1, cap_per_partition)
        self._resume_at = self.cap // 2
        self._lanes: dict[Lane, dict[str, deque[Pending]]] = {lane: {} for lane in LANES}
        self._per_source: dict[Partition, int] = {}
        self.size = 0

    def add(self, item: Pending) -> bool:
        """Queue a job; True when its source partition holds `cap` jobs or more (pause it)."""
        self._queue(item).append(item)
        return self._count_in(item) >= self.cap

    def restore(self, item: Pending) -> None:
        """Put a job taken for sending back at the head of its queue (it was not sent)."""
        self._queue(item).appendleft(item)
        self._count_in(item)

    def _queue(self, item: Pending) -> deque[Pending]:
        """The queue of the item's lane and key, created on first use."""
        queues = self._lanes[item.lane]
        queue = queues.get(item.key)
        if queue is None:
            queue = queues[item.key] = deque()
        return queue

    def _count_in(self, item: Pending) -> int:
        """Count one more queued job (per source partition and in total); the source's new count."""
        count = self._per_source.get(item.source, 0) + 1
        self._per_source[item.source] = count
        self.size += 1
        return count

    def queues(self, lane: Lane) -> Iterator[tuple[str, deque[Pending]]]:
        """(key, queue) of every non-empty queue of a lane, least recently served first."""
        lane_queues = self._lanes[lane]
        for key in [k for k, q in lane_queues.items() if not q]:
            del lane_queues[key]
        return iter(list(lane_queues.items()))

    def served(self, lane: Lane, key: str) -> None:
        """Move `key` behind the other keys of its lane: `queues` lists the least recently
        served key first, so small dispatch budgets still go round every key."""
        lane_queues = self._lanes[lane]
        queue = lane_queues.pop(key, None)
        if queue is not None:
            lane_queues[key] = queue

    def taken(self, item: Pending) -> bool:
        """Account for a job popped from its queue; True when its partition has just drained
        to half the cap (a pause for a full buffer may be lifted). Counts move by one, so a
        partition that reached the cap passes exactly through half on its way down."""
        self.size -= 1
        count = self._per_source[item.source] - 1
        self._per_source[item.source] = count
        return count == self._resume_at

    def held(self, source: Partition) -> int:
        """Jobs of `source` waiting here."""
        return self._per_source.get(source, 0)

    def drop_source(self, source: Partition) -> None:
        """Forget the jobs of a partition taken away by a rebalance (they are not lost: their
        offsets were not committed, the new owner reads them again)."""
        for lane_queues in self._lanes.values():
            for key, queue in list(lane_queues.items()):
                kept = deque(item for item in queue if item.source != source)
                self.size -= len(queue) - len(kept)
                lane_queues[key] = kept
        self._per_source.pop(source, None)
