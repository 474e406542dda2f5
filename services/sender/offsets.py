"""What each partition may commit: the end of its contiguous run of finished jobs, plus the
finished jobs beyond it (see commit_marks.py).

APNs answers and Kafka acknowledgements come back out of order, and a job may produce two
records (an outcome and a retry or DLQ copy), so "done" is per job and the committable offset of
a partition is one past the longest prefix of done jobs. Committing any further would let a
crash lose the unfinished job in between; the jobs done past it travel in the commit metadata,
and a partition taken over from a commit skips them (:meth:`PartitionOffsets.recover`).
"""

from __future__ import annotations

from collections import deque

from services.common.kafka.io import Position
from services.sender.commit_marks import decode_marks, encode_marks


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
            self.partition.finished(self.offset)


class PartitionOffsets:
    """The consumed-but-unfinished records of one partition, in consumption order."""

    __slots__ = ("_done_beyond", "_entries", "_next", "dirty", "partition", "revoked", "skip",
                 "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._entries: deque[Entry] = deque()
        #: Offsets finished while an older record of the partition is not.
        self._done_beyond: set[int] = set()
        #: One past the last record of the done prefix (None until one is done).
        self._next: int | None = None
        self.dirty = False
        #: Set when the partition is taken away: late completions no longer count.
        self.revoked = False
        #: Offsets a previous owner finished past its commit: consumed again, not sent again.
        self.skip: set[int] = set()

    def track(self, offset: int) -> Entry:
        entry = Entry(self, offset)
        self._entries.append(entry)
        return entry

    def finished(self, offset: int) -> None:
        self._done_beyond.add(offset)
        self.dirty = True

    def recover(self, committed: int, metadata: str | None) -> int:
        """Take over from a commit: remember the finished offsets its metadata lists past
        ``committed``; returns how many."""
        self.skip = decode_marks(committed, metadata)
        return len(self.skip)

    def commit(self) -> Position | None:
        """The position to commit now (None if nothing changed or nothing is done yet)."""
        self.dirty = False
        entries, done = self._entries, self._done_beyond
        while entries and entries[0].done:
            offset = entries.popleft().offset
            done.discard(offset)
            self._next = offset + 1
        if self.revoked:
            return None
        base = entries[0].offset if entries else self._next
        if base is None:
            return None
        return Position(self.topic, self.partition, base, encode_marks(base, done))


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

    def recommit(self, topic: str, partition: int) -> None:
        """Its last commit failed: include the partition in the next :meth:`commits`."""
        offsets = self._partitions.get((topic, partition))
        if offsets is not None:
            offsets.dirty = True

    def commits(self) -> list[Position]:
        """The position of every partition where a job finished since the last call."""
        out = []
        for offsets in self._partitions.values():
            if offsets.dirty:
                commit = offsets.commit()
                if commit is not None:
                    out.append(commit)
        return out
