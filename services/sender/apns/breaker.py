"""Per-certificate circuit breaker: after a certificate or connection failure, pause.

Classic MDM servers paused a minute after a connection error; pushing on would only burn jobs
(every one fails the same way) and hammer APNs. While a breaker is open the sender routes the
certificate's jobs to a retry tier, so none are lost or burned. After the cool-down one trial
request goes through (half-open): success closes the breaker, failure opens it again.

Pure logic with an injectable clock, so tests step time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One certificate's breaker.

    Answers to requests sent before the breaker opened still arrive afterwards; they must not
    close it (a late success says nothing about now) nor extend it (the same outage), so only
    the half-open trial's result changes an open breaker.
    """

    def __init__(self, cool_down_s: float = 60.0, clock: Clock = time.monotonic) -> None:
        self._cool_down_s = cool_down_s
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._trial_started_at: float | None = None
        self.last_reason: str | None = None

    @property
    def state(self) -> BreakerState:
        cooled = self._clock() - self._opened_at >= self._cool_down_s
        if self._state is BreakerState.OPEN and cooled:
            return BreakerState.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """May a request be sent now? In half-open state, True exactly once per trial.

        A trial whose answer never arrives (e.g. the job was lost in a crash) is given up after
        another cool-down, so the breaker cannot stay shut forever.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._trial_started_at is None or now - self._trial_started_at >= self._cool_down_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_started_at = now
            return True
        return False

    @property
    def idle(self) -> bool:
        """Closed and no trial running: the state of a breaker just created."""
        return self._state is BreakerState.CLOSED and self._trial_started_at is None

    def retry_after_s(self) -> float:
        """Seconds until a trial may be attempted (0 when closed or already due)."""
        if self._state is BreakerState.CLOSED:
            return 0.0
        base = self._trial_started_at if self._trial_started_at is not None else self._opened_at
        return max(0.0, base + self._cool_down_s - self._clock())

    def record_success(self) -> None:
        """An answer that proves the certificate and connection work (any HTTP answer but 403)."""
        if self._trial_started_at is not None:
            self._state = BreakerState.CLOSED
            self._trial_started_at = None
            self.last_reason = None

    def record_failure(self, reason: str) -> None:
        """A certificate or connection failure: open (or re-open after a failed trial)."""
        if self._state is BreakerState.CLOSED or self._trial_started_at is not None:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()
            self._trial_started_at = None
            self.last_reason = reason


#: Breakers held before a new one makes the registry drop its idle ones first (and then at
#: twice the number it kept): see `BreakerRegistry.__getitem__`.
SWEEP_FLOOR = 1024


class BreakerRegistry:
    """The breakers of all certificates (by push topic), created on first use.

    Bounded: idle breakers (closed, no trial: what a new one is) are dropped by `evict_closed`
    (the loop's sweep, every 60 s) and also before a new one is made while max(SWEEP_FLOOR,
    twice the breakers kept at the last drop) are held, so never more than that are: the
    failing certificates' and a bounded number of idle ones. A job is given its
    certificate's breaker before the pool says whether the certificate exists, so without the
    second drop a flood of jobs for made-up certificates kept one breaker (~140 B, its topic
    string and a dict slot) per certificate of the last minute: 100,000 in
    tests/bench/bench_memory.py.
    """

    def __init__(self, cool_down_s: float = 60.0, clock: Clock = time.monotonic) -> None:
        self._cool_down_s = cool_down_s
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._sweep_at = SWEEP_FLOOR

    def __getitem__(self, topic: str) -> CircuitBreaker:
        """The topic's breaker. Creating one may drop idle ones: the sender uses a breaker
        it was given before asking for another, and an idle breaker is what a new one is."""
        breaker = self._breakers.get(topic)
        if breaker is None:
            if len(self._breakers) >= self._sweep_at:
                self.evict_closed()
                self._sweep_at = max(SWEEP_FLOOR, 2 * len(self._breakers))
            breaker = self._breakers[topic] = CircuitBreaker(self._cool_down_s, self._clock)
        return breaker

    def __len__(self) -> int:
        return len(self._breakers)

    def open_topics(self) -> list[str]:
        """Certificates currently refusing requests (for metrics and status)."""
        return [t for t, b in self._breakers.items() if b.state is not BreakerState.CLOSED]

    def evict_closed(self) -> int:
        """Drop the breakers that are closed with no trial running: a new one would be the same,
        so only the breakers of certificates still failing are kept. Returns how many."""
        closed = [t for t, b in self._breakers.items() if b.idle]
        for topic in closed:
            del self._breakers[topic]
        return len(closed)
