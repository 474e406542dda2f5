"""A pipeline clock that moves only when a test moves it.

Tests of simulated-time behaviour (the enrollment race, the 25-hour self-healing, store expiry,
the fleet scheduler) used to sleep on a compressed real clock and assert how long things took,
which a loaded 2-core CI machine turns into flakes. With this clock nothing happens "later"
until the test says so: what used to be a race against real time becomes a sequence of events.
"""

from __future__ import annotations

import threading
import time

from services.common.clock import Clock


class ManualClock(Clock):
    """``now_ms()`` is whatever the test last set; starts at the real time of creation."""

    def __init__(self, start_ms: int | None = None) -> None:
        super().__init__(1.0)
        self._now_ms = start_ms if start_ms is not None else int(time.time() * 1000)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now_ms

    def advance(self, ms: int) -> int:
        """Move simulated time forward by ``ms``; returns the new time."""
        if ms < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now_ms += ms
            return self._now_ms

    def set(self, at_ms: int) -> None:
        """Move simulated time forward to ``at_ms``."""
        self.advance(at_ms - self.now_ms())
