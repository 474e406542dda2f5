"""What each partition may commit: the end of its contiguous run of finished jobs, plus the
finished jobs beyond it (see commit_marks.py).

APNs answers and Kafka acknowledgements come back out of order, and a job may produce two
records (an outcome and a retry or DLQ copy), so "done" is per job and the committable offset of
a partition is one past the longest prefix of done jobs. Committing any further would let a
crash lose the unfinished job in between; the jobs done past it travel in the commit metadata,
and a partition taken over from a commit skips them (:meth:`PartitionOffsets.recover`).

The repeat window. A SIGKILL repeats exactly the jobs that were sent to APNs and are not covered
by a commit the broker has acknowledged: those on the wire, those whose records Kafka has not
acknowledged yet, and those done since the last acknowledged commit. :attr:`OffsetTracker.unsettled`
counts them (a job from its answer until a commit covering it is acknowledged, see
:meth:`OffsetTracker.settle`); the loop adds it to its in-flight count against ``max_in_flight``,
so that after a crash at most ``max_in_flight`` jobs (1,000 by default) are pushed twice, by
construction, whatever the rate, the broker's latency or the moment of the kill.

Most of those had their outcome written already: each commit also says from when the outcomes of
the jobs it does not cover may date (``since_ms``: the oldest job whose records Kafka has not yet
acknowledged, or the commit's own time), and the next owner reads the outcomes topic from there
and skips the jobs that have one (already_sent.py). What a crash then repeats is the jobs whose
push had gone out but whose outcome Kafka had not acknowledged: those on the wire and those
answered within the last produce round trip.

The unrecorded window. Those are counted too: :attr:`OffsetTracker.unrecorded` holds the jobs
whose push was answered and that a next owner would still push again — a SENT or FAILED job
until Kafka acknowledges its records (its outcome then carries the job's source, and the next
owner skips it), a RETRYING or DEAD_LETTERED job until a commit covering it is acknowledged (a
next owner never skips those: its copy may be missing). The loop adds the requests on the wire
and keeps the sum under ``max_unrecorded``: with the outcome read on, what a SIGKILL or a stall
past the session timeout repeats is at most ``max_unrecorded`` pushes, by construction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from services.common.kafka.io import Position
from services.sender.already_sent import source_prefix
from services.sender.commit_marks import decode_marks, encode_marks_kept

#: Entry.held: not counted among the unrecorded jobs; counted until every record produced for it
#: is acknowledged; counted until a commit covering it is acknowledged.
NOT_HELD, UNTIL_DONE, UNTIL_SETTLED = 0, 1, 2


class Entry:
    """One consumed record: done once every record produced for it is acknowledged."""

    __slots__ = ("done", "held", "offset", "opened", "partition", "pending")

    def __init__(self, partition: PartitionOffsets, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.pending = 0
        self.done = False
        #: Counted among the unsettled jobs (from its answer, or its end if it had none).
        self.opened = False
        #: Counted among the unrecorded jobs: NOT_HELD, UNTIL_DONE or UNTIL_SETTLED.
        self.held = NOT_HELD

    def hold(self, *, until_settled: bool) -> None:
        """Its push was answered: a next owner would push it again until Kafka has its records
        (``until_settled``: until a commit covering it is acknowledged). Called before the
        answer's records are produced."""
        if self.held == NOT_HELD:
            self.held = UNTIL_SETTLED if until_settled else UNTIL_DONE
            self.partition.hold()

    def hold_until_settled(self) -> None:
        """Its outcome will not be written (Kafka refused it; the DLQ takes the job): only a
        commit makes it safe from a second push."""
        if self.held == UNTIL_DONE:
            self.held = UNTIL_SETTLED

    def add_pending(self, count: int = 1) -> None:
        """Records produced for this job that Kafka has yet to acknowledge."""
        if not self.opened:
            self.opened = True
            self.partition.opened(self)
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
            if not self.opened:
                self.opened = True
                self.partition.opened(self)
            if self.held == UNTIL_DONE:
                self.held = NOT_HELD
                self.partition.release(1)
            elif self.held == UNTIL_SETTLED:
                self.partition.held_done += 1
            self.partition.finished(self.offset)


class Unsettled:
    """The running count of unsettled jobs over all partitions (read on every dispatch), and
    the opened entries in the order they were opened, with when (to find the oldest one Kafka
    has not finished: see :meth:`OffsetTracker.since_ms`)."""

    __slots__ = ("count", "now_ms", "opened", "unrecorded")

    def __init__(self) -> None:
        self.count = 0
        #: Answered jobs a next owner would push again now (see the module's docstring).
        self.unrecorded = 0
        #: Epoch ms of the loop's current turn (set by the loop; no clock call per job). The
        #: turn starts before any record it produces, so it is never later than their
        #: timestamps.
        self.now_ms = 0
        self.opened: deque[tuple[int, Entry]] = deque()


class PartitionOffsets:
    """The consumed-but-unfinished records of one partition, in consumption order."""

    __slots__ = ("_covered", "_done_beyond", "_entries", "_held", "_held_covered", "_held_popped",
                 "_held_settled", "_next", "_opened", "_popped", "_settled", "_unsettled", "dirty",
                 "held_done", "partition", "revoked", "skip", "source", "topic")

    def __init__(self, topic: str, partition: int, unsettled: Unsettled | None = None) -> None:
        self.topic = topic
        self.partition = partition
        #: The job-source header of its records' outcomes, less the offset (already_sent.py).
        self.source = source_prefix(topic, partition)
        self._unsettled = unsettled or Unsettled()
        #: Entries opened (answered or finished), entries popped off the done prefix, and the
        #: number of opened entries an acknowledged commit covers: all only ever grow.
        self._opened = 0
        self._popped = 0
        self._settled = 0
        #: Opened entries the position :meth:`commit` returned last covers (its offset and
        #: the marks that fitted in its metadata).
        self._covered = 0
        #: Entries held among the unrecorded jobs now; UNTIL_SETTLED entries popped off the
        #: done prefix (only ever grows), as many at the last commit returned, and as many under
        #: an acknowledged commit.
        self._held = 0
        #: UNTIL_SETTLED entries done (only ever grows): a commit whose marks all fit covers them.
        self.held_done = 0
        self._held_popped = 0
        self._held_covered = 0
        self._held_settled = 0
        self._entries: deque[Entry] = deque()
        #: Offsets finished while an older record of the partition is not.
        self._done_beyond: set[int] = set()
        #: One past the last record of the done prefix (None until one is done).
        self._next: int | None = None
        self.dirty = False
        #: Set when the partition is taken away: late completions no longer count.
        self.revoked = False
        #: Offsets a previous owner finished past its commit: consumed again, not sent again
        #: (True: known from its outcome on the outcomes topic, False: from the commit marks).
        self.skip: dict[int, bool] = {}

    def track(self, offset: int) -> Entry:
        entry = Entry(self, offset)
        self._entries.append(entry)
        return entry

    def opened(self, entry: Entry) -> None:
        if self.revoked:  # a late answer for a partition given away: its owner's concern now
            return
        self._opened += 1
        unsettled = self._unsettled
        unsettled.count += 1
        unsettled.opened.append((unsettled.now_ms, entry))

    def hold(self) -> None:
        if self.revoked:
            return
        self._held += 1
        self._unsettled.unrecorded += 1

    def release(self, count: int) -> None:
        if self.revoked:
            return
        self._held -= count
        self._unsettled.unrecorded -= count

    @property
    def unsettled(self) -> int:
        """Jobs of this partition answered (or finished) but not covered by an acknowledged
        commit: what a crash now would repeat at most."""
        return self._opened - self._settled

    def covered(self) -> tuple[int, int]:
        """How many opened entries the position :meth:`commit` returned last covers, and how
        many entries held until settled it moved the committed offset past."""
        return self._covered, self._held_covered

    def settle(self, covered: tuple[int, int]) -> None:
        """A commit covering `covered` (see :meth:`covered`) was acknowledged (the latest one
        counts: one whose marks did not all fit covers fewer than the one before)."""
        opened, held = covered
        self._unsettled.count -= opened - self._settled
        self._settled = opened
        self.release(held - self._held_settled)  # back up if this one lists fewer
        self._held_settled = held

    def drop(self) -> None:
        """The partition is gone: its unsettled jobs are the next owner's to repeat."""
        self._unsettled.count -= self.unsettled
        self._settled = self._opened
        self._unsettled.unrecorded -= self._held
        self._held = 0

    def finished(self, offset: int) -> None:
        self._done_beyond.add(offset)
        self.dirty = True

    def recover(self, committed: int, metadata: str | None) -> int:
        """Take over from a commit: remember the finished offsets its metadata lists past
        ``committed``; returns how many."""
        self.skip = dict.fromkeys(decode_marks(committed, metadata), False)
        return len(self.skip)

    def already_sent(self, offsets: Collection[int]) -> int:
        """Offsets whose outcome a previous owner wrote (already_sent.py): skipped too; returns
        how many were not known from the commit marks already."""
        skip = self.skip
        new = [o for o in offsets if o not in skip]
        skip.update(dict.fromkeys(new, True))
        return len(new)

    def commit(self, since_ms: int | None = None) -> Position | None:
        """The position to commit now (None if nothing changed or nothing is done yet), saying
        that the outcomes of the jobs it does not cover date from ``since_ms`` or later."""
        self.dirty = False
        entries, done = self._entries, self._done_beyond
        while entries and entries[0].done:
            entry = entries.popleft()
            offset = entry.offset
            if entry.held == UNTIL_SETTLED:
                self._held_popped += 1
            done.discard(offset)
            self._popped += 1
            self._next = offset + 1
        if self.revoked:
            return None
        base = entries[0].offset if entries else self._next
        if base is None:
            return None
        marks, kept = encode_marks_kept(base, done, since_ms=since_ms)
        self._covered = self._popped + kept
        # Every done job is in the commit when its marks all fit (the usual case); otherwise
        # only those below its offset are sure to be. A retried job past an older one still
        # waiting (a throttled neighbour) is thus released by the commit listing it, and cannot
        # fill the window that older job needs.
        self._held_covered = self.held_done if kept == len(done) else self._held_popped
        return Position(self.topic, self.partition, base, marks)


class OffsetTracker:
    """PartitionOffsets of every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionOffsets] = {}
        self._unsettled = Unsettled()
        #: What each commit sent and not yet answered covers, oldest first (Kafka answers a
        #: group's commits in the order they were sent).
        self._sent: deque[dict[tuple[str, int], tuple[int, int]]] = deque()

    @property
    def unsettled(self) -> int:
        """Jobs answered (or finished) and not yet covered by an acknowledged commit, over all
        partitions: at most this many are repeated if the process dies now."""
        return self._unsettled.count

    @property
    def unrecorded(self) -> int:
        """Jobs answered by APNs that a next owner would push again if the process died now
        (outcome not yet acknowledged, or a retry / DLQ job not yet under an acknowledged
        commit); the loop adds the requests on the wire."""
        return self._unsettled.unrecorded

    def turn(self, now_ms: int) -> None:
        """The loop's turn starts at ``now_ms`` (epoch ms): the time of the jobs opened in it."""
        self._unsettled.now_ms = now_ms

    def since_ms(self) -> int:
        """No later than the Kafka timestamp of any outcome produced, or still to be produced,
        for a job that is not finished now: the opening time of the oldest opened job still
        waiting for Kafka's acknowledgement, or the current turn's time if none is. Jobs not
        yet opened produce their records from now on."""
        unsettled = self._unsettled
        opened = unsettled.opened
        while opened:
            entry = opened[0][1]
            if not (entry.done or entry.partition.revoked):
                return min(opened[0][0], unsettled.now_ms)
            opened.popleft()
        return unsettled.now_ms

    def partition(self, topic: str, partition: int) -> PartitionOffsets:
        key = (topic, partition)
        offsets = self._partitions.get(key)
        if offsets is None:
            offsets = self._partitions[key] = PartitionOffsets(topic, partition,
                                                                self._unsettled)
        return offsets

    def revoke(self, topic: str, partition: int) -> None:
        offsets = self._partitions.pop((topic, partition), None)
        if offsets is not None:
            offsets.revoked = True
            offsets.drop()

    def settle(self, failed: Collection[tuple[str, int]] = ()) -> None:
        """The oldest commit not yet answered was answered; `failed` are the partitions it
        could not commit (their jobs stay unsettled until a later commit covers them)."""
        if not self._sent:
            return
        for key, covered in self._sent.popleft().items():
            offsets = self._partitions.get(key)
            if offsets is not None and key not in failed:
                offsets.settle(covered)

    def recommit(self, topic: str, partition: int) -> None:
        """Its last commit failed: include the partition in the next :meth:`commits`."""
        offsets = self._partitions.get((topic, partition))
        if offsets is not None:
            offsets.dirty = True

    def commits(self, *, force: bool = False) -> list[Position]:
        """The position of every partition where a job finished since the last call (of every
        partition with one, when `force`d); the caller commits them at once and calls
        :meth:`settle` with the answer."""
        out = []
        covers = {}
        since_ms: int | None = None
        for key, offsets in self._partitions.items():
            if offsets.dirty or force:
                if since_ms is None:
                    since_ms = self.since_ms()
                commit = offsets.commit(since_ms)
                if commit is not None:
                    out.append(commit)
                    covers[key] = offsets.covered()
        if covers:
            self._sent.append(covers)
        return out
