"""Retry tiers: which tier a failed job goes to, and when a tier's partition may be read again.

Each tier is a topic with one fixed delay, so its records are FIFO by due time: when the head of
a partition is not due, nothing behind it is either. The sender then pauses that partition and
seeks it back to the head, and resumes it when the head's `mdmpush.not_before` has passed — the
poll loop never sleeps, and a record is never handed out early because it is only accepted
after a due check. This module is the bookkeeping; the loop does the pause/seek/resume calls.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message

from services.common.catalogue import Topics

ATTEMPT_HEADER = "mdmpush.attempt"
NOT_BEFORE_HEADER = "mdmpush.not_before"


class RetryScheduler:
    """Tier choice plus the held (paused) retry partitions and when each is due."""

    def __init__(self, topics: Topics, delays_ms: Sequence[int]) -> None:
        if not delays_ms:
            raise ValueError("at least one retry delay is needed")
        self.delays_ms = tuple(sorted(delays_ms))
        self.topics = [topics.retry(d) for d in self.delays_ms]
        self._topic_set = frozenset(self.topics)
        #: (topic, partition) -> (offset of the held head, due epoch ms)
        self._held: dict[tuple[str, int], tuple[int, int]] = {}

    def is_retry_topic(self, topic: str) -> bool:
        return topic in self._topic_set

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
    def not_before_ms(msg: Message) -> int:
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

    def hold(self, topic: str, partition: int, offset: int, due_ms: int) -> None:
        """The partition is paused and seeks back to `offset`, which is due at `due_ms`."""
        self._held[(topic, partition)] = (offset, due_ms)

    def is_held(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._held

    def due(self, now_ms: int) -> list[tuple[str, int]]:
        """Held partitions whose head is due: the caller resumes them."""
        ready = [tp for tp, (_, due_ms) in self._held.items() if due_ms <= now_ms]
        for tp in ready:
            del self._held[tp]
        return ready

    def next_wait_s(self, now_ms: int) -> float | None:
        """Seconds until the earliest held head is due (None if nothing is held)."""
        if not self._held:
            return None
        return max(0.0, (min(due for _, due in self._held.values()) - now_ms) / 1000)

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition taken away by a rebalance (its new owner starts afresh)."""
        self._held.pop((topic, partition), None)

    @property
    def held(self) -> int:
        return len(self._held)
