"""Which offset of each partition may be stored: the end of its contiguous run of finished jobs.

APNs answers and Kafka acknowledgements come back out of order, and a job may produce two
records (an outcome and a retry or DLQ copy), so "done" is per job and the storable offset of a
partition is one past the longest prefix of done jobs. Storing any further would let a crash
lose the unfinished job in between.
"""

from __future__ import annotations

from collections import deque


class Entry:
    """One consumed record: done once every record produced for it is acknowledged."""

    __slots__ = ("done", "offset", "partition", "pending")

    def __init__(self, partition: PartitionOffsets, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.pending = 0
        self.done = False

    def add_pending(self, count: int = 1) -> None:
        """Records produced for this job that Kafka has yet to acknowledge."""
        self.pending += count

    def acked(self) -> None:
        """One produced record was acknowledged."""
        self.pending -= 1
        if self.pending == 0:
            self.finish()

    def finish(self) -> None:
        """Nothing more will be produced for this record (or nothing was needed)."""
        if not self.done:
            self.done = True
            self.partition.dirty = True


class PartitionOffsets:
    """The consumed-but-unfinished records of one partition, in consumption order."""

    __slots__ = ("_entries", "dirty", "partition", "revoked", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._entries: deque[Entry] = deque()
        self.dirty = False
        #: Set when the partition is taken away: late completions no longer count.
        self.revoked = False

    def track(self, offset: int) -> Entry:
        entry = Entry(self, offset)
        self._entries.append(entry)
        return entry

    def advance(self) -> int | None:
        """The offset to store now (one past the done prefix), or None if it did not move."""
        self.dirty = False
        entries = self._entries
        last = None
        while entries and entries[0].done:
            last = entries.popleft().offset
        return None if last is None or self.revoked else last + 1

    @property
    def unfinished(self) -> int:
        return len(self._entries)


class OffsetTracker:
    """PartitionOffsets of every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def partition(self, topic: str, partition: int) -> PartitionOffsets:
        key = (topic, partition)
        offsets = self._partitions.get(key)
        if offsets is None:
            offsets = self._partitions[key] = PartitionOffsets(topic, partition)
        return offsets

    def revoke(self, topic: str, partition: int) -> None:
        offsets = self._partitions.pop((topic, partition), None)
        if offsets is not None:
            offsets.revoked = True

    def storable(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every partition whose done prefix grew."""
        out = []
        for offsets in self._partitions.values():
            if offsets.dirty:
                offset = offsets.advance()
                if offset is not None:
                    out.append((offsets.topic, offsets.partition, offset))
        return out

    @property
    def unfinished(self) -> int:
        return sum(p.unfinished for p in self._partitions.values())
