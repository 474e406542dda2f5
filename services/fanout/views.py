"""A compacted topic read in full by every worker, in a thread of its own (policies, activity).

Expansion asks these views synchronously (a dict lookup), so it never awaits Kafka for them.
`wait_loaded()` returns once everything that was on the topic at start has been read, so the
first expansions after a restart see what the topic held. An undecodable value is logged and
counted by the caller's `on_undecodable`, not dead-lettered: every worker re-reads the whole
topic at each start and would dead-letter it again each time.
"""

from __future__ import annotations

import logging
import threading
from typing import Generic, TypeVar

from services.common.errors import TopicReadError
from services.common.kafka.compacted import CompactedView

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Wait before asking again when Kafka does not answer for the topic.
RETRY_S = 1.0


class ViewThread(Generic[T]):
    """Keeps `view` up to date from a daemon thread between start() and stop()."""

    def __init__(self, view: CompactedView[T], what: str) -> None:
        self.view = view
        self._what = what
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fanout-{what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def wait_loaded(self, timeout_s: float) -> bool:
        return self._loaded.wait(timeout_s)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.view.poll(0.2)
                except TopicReadError as exc:  # Kafka not answering yet: try again
                    log.warning("%s not readable yet: %s", self._what, exc)
                    self._stop.wait(RETRY_S)
                    continue
                if self.view.loaded:
                    self._loaded.set()
        except Exception:  # a dead reader thread must be visible, not silent
            log.exception("%s reader stopped; what it read is frozen", self._what)
            raise
        finally:
            self.view.close()
