"""Retry tiers: which tier a failed job goes to, and when a tier's partition may be read again.

Each tier is a topic with one fixed delay, so its records are FIFO by due time: when the head of
a partition is not due, nothing behind it is either. The sender then pauses that partition
(pauses.py, reason RETRY_NOT_DUE) and seeks it back to the head, and lifts that pause when the
head's `mdmpush.not_before` has passed — the poll loop never sleeps, and a record is never handed
out early because it is only accepted after a due check. A head is held at most its tier's delay
(see `wait_until`). This module is the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.catalogue import Topics
from services.common.kafka.io import Partition, Record

ATTEMPT_HEADER = "mdmpush.attempt"
NOT_BEFORE_HEADER = "mdmpush.not_before"


class RetryScheduler:
    """Tier choice plus the held (paused) retry partitions and when each is due."""

    def __init__(self, topics: Topics, delays_ms: Sequence[int]) -> None:
        if not delays_ms:
            raise ValueError("at least one retry delay is needed")
        self.delays_ms = tuple(sorted(delays_ms))
        self.topics = [topics.retry(d) for d in self.delays_ms]
        #: The retry tier topics, for the loop's per-record membership test.
        self.topic_set = frozenset(self.topics)
        self._delay_of = dict(zip(self.topics, self.delays_ms, strict=True))
        #: Held (paused) partition -> due epoch ms of its head.
        self._held: dict[Partition, int] = {}
        #: Held partition -> offset of its head; once due, the offset its re-read head must have.
        self._head: dict[Partition, int] = {}
        self._released: dict[Partition, int] = {}

    # -- where a job goes ---------------------------------------------------------------------
    def tier_for_failure(self, attempts_made: int, long_backoff: bool = False) -> int:
        """The n-th failed attempt goes to the n-th tier; 429 (long_backoff) one tier later."""
        index = max(0, attempts_made - 1) + (1 if long_backoff else 0)
        return min(index, len(self.delays_ms) - 1)

    def tier_for_wait(self, wait_s: float) -> int:
        """The shortest tier whose delay covers `wait_s` (e.g. an open breaker), else the last."""
        wait_ms = wait_s * 1000
        for index, delay in enumerate(self.delays_ms):
            if delay >= wait_ms:
                return index
        return len(self.delays_ms) - 1

    @staticmethod
    def headers(attempt: int, not_before_ms: int) -> list[tuple[str, str | bytes | None]]:
        return [
            (ATTEMPT_HEADER, str(attempt).encode()),
            (NOT_BEFORE_HEADER, str(not_before_ms).encode()),
        ]

    # -- when a record may be read --------------------------------------------------------------
    @staticmethod
    def not_before_ms(msg: Record) -> int:
        """The record's due time (0, i.e. due, if the header is missing or unreadable)."""
        headers = msg.headers()
        if not headers:
            return 0
        for header in headers:
            name, value = header[0], header[1]
            if name == NOT_BEFORE_HEADER and value is not None:
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0

    def wait_until(self, source: Partition, offset: int, msg: Record, now_ms: int) -> int | None:
        """When the retry record at `offset` of `source` is due, if after `now_ms` (None: now).

        That is its `mdmpush.not_before`, but never more than its tier's delay after this sender
        read it: the sender writes no later time, so a record whose header lies far ahead (another
        producer's, or damaged) waits one delay and is then sent like any other, instead of
        holding its partition, and every record behind it, until then. A head read again after
        its hold ran out is due, whatever its header says."""
        if self._released.pop(source, None) == offset:
            return None
        due_ms = self.not_before_ms(msg)
        if due_ms <= now_ms:
            return None
        return min(due_ms, now_ms + self._delay_of.get(source[0], self.delays_ms[-1]))

    def hold(self, partition: Partition, due_ms: int, offset: int | None = None) -> None:
        """The partition was paused and sought back to its head (at `offset`), due at `due_ms`."""
        self._held[partition] = due_ms
        if offset is not None:
            self._head[partition] = offset

    def due(self, now_ms: int) -> list[Partition]:
        """Held partitions whose head is due: the caller lifts their pause."""
        ready = [tp for tp, due_ms in self._held.items() if due_ms <= now_ms]
        for tp in ready:
            del self._held[tp]
            head = self._head.pop(tp, None)
            if head is not None:
                self._released[tp] = head
        return ready

    def next_wait_s(self, now_ms: int) -> float | None:
        """Seconds until the earliest held head is due (None if nothing is held)."""
        if not self._held:
            return None
        return max(0.0, (min(self._held.values()) - now_ms) / 1000)

    def drop(self, partition: Partition) -> None:
        """Forget a partition taken away by a rebalance (its new owner starts afresh)."""
        self._held.pop(partition, None)
        self._head.pop(partition, None)
        self._released.pop(partition, None)
