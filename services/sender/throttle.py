"""Token buckets per (job key, lane): the farm-wide throttle, because one sender owns a key.

The bucket is a GCRA ("virtual scheduling"): it keeps the theoretical time of the next send
instead of a token count, so a loop that wakes a little late does not lose that time — the next
send is due one interval after the previous *due* time, not after the late wake-up. That keeps
the long-run rate exact (the bar is ±2 % at 50/min and 6,000/min) while allowing a burst of at
most a tenth of a second's worth of sends after an idle period. Pure logic, injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

#: A burst may use up to this many seconds' worth of the rate (at least one send).
BURST_S = 0.1
#: A wake-up up to this late (or one interval, if shorter) still counts from the due time.
LATE_SLACK_S = 0.05


class TokenBucket:
    """`per_minute` sends per minute on average; 0 means unthrottled."""

    __slots__ = ("_clock", "_interval", "_tat", "_tolerance", "per_minute")

    def __init__(self, per_minute: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._tat = clock()
        self.per_minute = 0.0
        self._interval = 0.0
        self._tolerance = 0.0
        self.set_rate(per_minute)

    def set_rate(self, per_minute: float) -> None:
        """Change the rate in place (a policy change), keeping the schedule already earned."""
        if per_minute < 0:
            raise ValueError("a rate cannot be negative")
        if per_minute == self.per_minute:
            return
        self.per_minute = per_minute
        if per_minute == 0:
            self._interval = self._tolerance = 0.0
            return
        self._interval = 60.0 / per_minute
        burst = max(1, int(per_minute / 60.0 * BURST_S))
        self._tolerance = (burst - 1) * self._interval
        # A slower rate must not let a schedule earned at the faster one through at once.
        self._tat = min(self._tat, self._clock() + self._interval)

    @property
    def unthrottled(self) -> bool:
        return self.per_minute == 0

    def try_take(self) -> bool:
        """Take one send if it is due now; False means wait `wait_s()` first."""
        if self._interval == 0:
            return True
        now = self._clock()
        tat = self._tat
        if now < tat - self._tolerance:
            return False
        self._tat = max(tat, now - min(self._interval, LATE_SLACK_S)) + self._interval
        return True

    @property
    def idle(self) -> bool:
        """Unthrottled, or its schedule is far enough behind the clock that a send now starts
        a fresh one (what a new bucket would do)."""
        return self._interval == 0 or self._clock() - self._tat >= LATE_SLACK_S

    def wait_s(self) -> float:
        """Seconds until the next send is due (0 if one is due now)."""
        if self._interval == 0:
            return 0.0
        return max(0.0, self._tat - self._tolerance - self._clock())


class Throttle:
    """The buckets of every (key, lane) in use, created on first use, dropped when idle."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, key: str, lane: str, per_minute: float) -> TokenBucket:
        """The bucket of (key, lane), at the rate the current policy gives it."""
        bucket = self._buckets.get((key, lane))
        if bucket is None:
            bucket = self._buckets[(key, lane)] = TokenBucket(per_minute, self._clock)
        elif bucket.per_minute != per_minute:
            bucket.set_rate(per_minute)
        return bucket

    def evict_idle(self) -> int:
        """Drop the buckets that have earned their full burst back: a new bucket for the key
        allows the same burst and then the same rate, so dropping them keeps every promise and
        the buckets of certificates (or shards) that no longer send do not pile up. Returns how
        many."""
        idle = [k for k, b in self._buckets.items() if b.idle]
        for key in idle:
            del self._buckets[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._buckets)
