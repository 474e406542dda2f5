"""One thread, one heap of timers in simulated time: how 10,000+ devices keep their appointments.

A thread per device would cost megabytes and context switches; every device timer (the 0.7 s
enrollment race, the restore delay, the 25-hour push-magic window, online schedules, check-in
processing delays) is instead an entry in one heap, due at a simulated epoch-millisecond time of
the shared :class:`~services.common.clock.Clock`. The thread sleeps for the *real* time until the
next entry is due, so a compressed clock (speed 3600) makes 25 simulated hours pass in 25 s.

Every device state change runs on this thread, so device state needs no locks; other threads
(the APNs simulator's loop, the test) hand work over with :meth:`Scheduler.call_soon`, which is
thread-safe and never blocks for long.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from services.common.clock import Clock

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Task = Callable[[], object]

#: Longest real sleep between checks, so a stop request or a clock change is seen promptly.
_MAX_WAIT_S = 0.5
#: Due timers run per turn before looking at hand-overs again.
_TIMER_BATCH = 1000


class Scheduler:
    """Runs callbacks at simulated times on one daemon thread (start/stop or a ``with`` block)."""

    def __init__(self, clock: Clock, name: str = "sim-fleet") -> None:
        self.clock = clock
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = itertools.count()
        self._inbox: deque[Task] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- thread-safe entry points -------------------------------------------------------------

    def call_soon(self, fn: Task) -> None:
        """Run ``fn`` on the scheduler thread as soon as possible (any thread)."""
        self._inbox.append(fn)
        with self._cond:
            self._cond.notify()

    def call_at(self, at_ms: int, fn: Task) -> None:
        """Run ``fn`` once simulated time reaches ``at_ms`` (any thread)."""
        self.call_soon(lambda: self._push(at_ms, fn))

    def call_later(self, delay_ms: float, fn: Task) -> None:
        """Run ``fn`` ``delay_ms`` simulated milliseconds from now (any thread)."""
        self.call_at(self.clock.now_ms() + int(delay_ms), fn)

    def run_sync(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Run ``fn`` on the scheduler thread and wait for its result (not from that thread)."""
        if threading.current_thread() is self._thread:
            return fn()
        future: Future[T] = Future()

        def task() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

        self.call_soon(task)
        return future.result(timeout)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until nothing handed over is pending and no timer is due (not from the scheduler
        thread). Tests that move a manual clock use it instead of sleeping: what the new time
        made due, and whatever that handed over in turn, has run when this returns."""
        deadline = time.monotonic() + timeout
        while not self.run_sync(self._idle, timeout):
            if time.monotonic() > deadline:
                raise TimeoutError(f"fleet scheduler still busy after {timeout}s")

    # -- scheduler-thread helpers -------------------------------------------------------------

    def _idle(self) -> bool:
        return not self._inbox and not (self._heap and self._heap[0][0] <= self.clock.now_ms())

    def schedule(self, at_ms: int, fn: Task) -> None:
        """``call_at`` for code already on the scheduler thread (no hand-over)."""
        self._push(at_ms, fn)

    def _push(self, at_ms: int, fn: Task) -> None:
        heapq.heappush(self._heap, (at_ms, next(self._seq), fn))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the callback running now; timers not yet due are dropped."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        heap, inbox, clock = self._heap, self._inbox, self.clock
        while not self._stopping:
            # Bounded batches in turn, so neither a burst of pushes nor a timer backlog starves
            # the other.
            for _ in range(len(inbox)):
                self._execute(inbox.popleft())
            now = clock.now_ms()
            for _ in range(_TIMER_BATCH):
                if not heap or heap[0][0] > now:
                    break
                self._execute(heapq.heappop(heap)[2])
            if inbox or (heap and heap[0][0] <= now):
                continue
            wait = _MAX_WAIT_S
            if heap:
                wait = min(wait, max(0.0, clock.real_seconds(heap[0][0] - clock.now_ms())))
            with self._cond:
                if not inbox and not self._stopping and wait > 0:
                    self._cond.wait(wait)

    @staticmethod
    def _execute(fn: Task) -> None:
        try:
            fn()
        except Exception:  # one device's bug must not stop the fleet
            log.exception("fleet callback failed")
