"""Token buckets per (job key, lane): the farm-wide throttle, because one sender owns a key.

The bucket is a GCRA ("virtual scheduling"): it keeps the theoretical time of the next send
instead of a token count, so a loop that wakes a little late does not lose that time — the next
send is due one interval after the previous *due* time, not after the late wake-up. That keeps
the long-run rate exact (the bar is ±2 % at 50/min and 6,000/min) while allowing a burst of at
most a tenth of a second's worth of sends after an idle period. Pure logic, injectable clock.

Bounded catch-up. A loaded sender comes back to a bucket late by a whole turn of the loop (a
turn that decodes thousands of another certificate's jobs, answers, the unrecorded window full:
0.1-0.4 s under a flood on a loaded machine) where one send is due every 0.12 s (6,000/min in 12
shards). Forgiving only LATE_SLACK_S of each such delay lost 9-24 % of the rate. So a bucket that
still had jobs waiting after its last send (`try_take(more=True)`: it was owed its next send at
the due time) keeps its schedule up to CATCH_UP_S late and makes that time up at once; beyond
that, and after an idle period (no job waiting: nothing was owed), the schedule starts afresh as
before. The bound, for any span of T seconds: a bucket sends at most
(T + CATCH_UP_S + burst tolerance) / interval + 1 — at 6,000/min, at most 1.25 seconds' worth
(+ one send per shard) in any second, never a make-up of a long stall.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

#: A burst may use up to this many seconds' worth of the rate (at least one send).
BURST_S = 0.1
#: A wake-up up to this late (or one interval, if shorter) still counts from the due time.
LATE_SLACK_S = 0.05
#: A bucket owed its next send (jobs were waiting) keeps its schedule up to this late: the loop
#: makes up at most this many seconds' worth of sends at once (see the module's docstring).
CATCH_UP_S = 0.25


class TokenBucket:
    """`per_minute` sends per minute on average; 0 means unthrottled."""

    __slots__ = ("_clock", "_interval", "_owed", "_tat", "_tolerance", "per_minute")

    def __init__(self, per_minute: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._tat = clock()
        #: Jobs were waiting after the last send: the next one is owed at its due time.
        self._owed = False
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

    def try_take(self, more: bool = False) -> bool:
        """Take one send if it is due now; False means wait `wait_s()` first. `more`: jobs still
        wait behind this one, so the next send is owed at its due time and a late loop makes
        up to CATCH_UP_S of it up (the module's docstring)."""
        if self._interval == 0:
            return True
        now = self._clock()
        tat = self._tat
        if now < tat - self._tolerance:
            return False
        slack = CATCH_UP_S if self._owed else min(self._interval, LATE_SLACK_S)
        self._tat = max(tat, now - slack) + self._interval
        self._owed = more
        return True

    @property
    def idle(self) -> bool:
        """Unthrottled, or its schedule is far enough behind the clock that a send now starts
        a fresh one (what a new bucket would do: nothing owed left to make up)."""
        if self._interval == 0:
            return True
        return self._clock() - self._tat >= (CATCH_UP_S if self._owed else LATE_SLACK_S)

    def most_in(self, span_s: float) -> int:
        """The most sends this bucket allows in any span of `span_s` seconds, late turns made
        up included (the bound in the module's docstring; the benchmark prints it)."""
        if self._interval == 0:
            raise ValueError("an unthrottled bucket has no bound")
        return int((span_s + CATCH_UP_S + self._tolerance) / self._interval) + 1

    def wait_s(self) -> float:
        """Seconds until the next send is due (0 if one is due now)."""
        if self._interval == 0:
            return 0.0
        return max(0.0, self._tat - self._tolerance - self._clock())


class Throttle:
    """The buckets of every throttled (key, lane) in use, created on first use, dropped when
    idle.

    An unthrottled rate (0, the default policy) needs no schedule: every such key gets the one
    shared unthrottled bucket (it never changes: `try_take` is always True, `wait_s` always 0)
    and nothing is kept per key. A bucket per key there cost ~200 B plus its key string per
    certificate seen in the last eviction period (EVICT_S, 60 s) — 100,000 jobs for made-up
    certificates made 100,000 of them (tests/bench/bench_memory.py), for keys that never send.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._unthrottled = TokenBucket(0, clock)

    def bucket(self, key: str, lane: str, per_minute: float) -> TokenBucket:
        """The bucket of (key, lane), at the rate the current policy gives it. A key whose
        policy became unthrottled loses its bucket; throttled again, it starts afresh like an
        idle one (the unthrottled time in between allowed any number of sends anyway)."""
        if per_minute == 0:
            self._buckets.pop((key, lane), None)
            return self._unthrottled
        bucket = self._buckets.get((key, lane))
        if bucket is None:
            bucket = self._buckets[(key, lane)] = TokenBucket(per_minute, self._clock)
        elif bucket.per_minute != per_minute:
            bucket.set_rate(per_minute)
        return bucket

    def evict_idle(self) -> int:
        """Drop the buckets that have earned their full burst back: a new bucket for the key
        allows the same burst and then the same rate, so dropping them keeps every promise and
        the buckets of certificates (or shards) that no longer send do not pile up. One owed a
        catch-up counts as idle only once CATCH_UP_S behind (its jobs are gone, or the loop is
        that late: a new bucket then sends no more than it would). Returns how many."""
        idle = [k for k, b in self._buckets.items() if b.idle]
        for key in idle:
            del self._buckets[key]
        return len(idle)

    def __len__(self) -> int:
        return len(self._buckets)
