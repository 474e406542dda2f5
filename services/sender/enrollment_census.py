"""How many enrollments each push topic serves, counted from the compacted registry topic.

The sender knows certificates, not devices; the fan-out's registry table is split over its
workers and not reachable from here. `mdm.device.registry.v1` (the latest DeviceRecord per
enrollment, the contract every reader outside the fan-out uses, see
services/common/registry_view.py) is the one place holding every enrollment with its topic, so
each sender follows it with a group-less reader (services/common/kafka/compacted.py) on a thread
of its own, busy at most a quarter of the time, and recounts every `interval_s`. Only the topic
of each ENROLLED record is kept (interned: a million enrollments share a handful of topic
strings), not the record.

The count is unknown (None) until the topic has been read to the end it had when reading began:
a gauge at 0 before that would claim a certificate serves nobody.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from confluent_kafka import KafkaException

from services.common.errors import TopicReadError
from services.common.kafka.compacted import CompactedView
from services.common.push_certs import enrolled_under
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: How long one read of the registry waits for records (also how quickly close() is noticed).
POLL_S = 0.5

#: Share of the time the census may spend reading and decoding: it shares the interpreter with
#: the sender's loop, which must keep sending while a large registry is read at start (decoding
#: runs at ~11,000 records/s on the shared 2-core test machine: tests/bench/bench_certs_census.py).
BUSY_SHARE = 0.25

ViewFactory = Callable[[], CompactedView[str | None]]


def enrolled_topic(serde: AvroSerde) -> Callable[[bytes], str | None]:
    """Decoder of a DeviceRecord to the push topic it is reachable on (None: not ENROLLED)."""

    def decode(value: bytes) -> str | None:
        topic = enrolled_under(serde.decode_as(value, "DeviceRecord"))
        return None if topic is None else sys.intern(topic)

    return decode


def registry_view(kafka: KafkaSettings, topic: str, serde: AvroSerde) -> ViewFactory:
    """The factory of the census's view of the registry topic (built on the census thread)."""
    return lambda: CompactedView(kafka, topic, enrolled_topic(serde), name="sender-census")


class EnrollmentCensus:
    """Enrollments per push topic; `counts()` may be read from any thread."""

    def __init__(self, view: ViewFactory, interval_s: float) -> None:
        self._factory = view
        self._interval_s = interval_s
        self._counts: Mapping[str, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start counting (idempotent; the thread is a daemon and ends with close())."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="enrollment-census",
                                            daemon=True)
            self._thread.start()

    def counts(self) -> Mapping[str, int] | None:
        """Enrollments per topic at the last count; None until the registry has been read."""
        return self._counts

    def count(self, topic: str) -> int | None:
        counts = self._counts
        return None if counts is None else counts.get(topic, 0)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        view: CompactedView[str | None] | None = None
        next_count = 0.0
        warned = False
        try:
            while not self._stop.is_set():
                try:
                    if view is None:
                        view = self._factory()
                    started = time.monotonic()
                    if view.poll(POLL_S):
                        spent = time.monotonic() - started
                        self._stop.wait(spent * (1 - BUSY_SHARE) / BUSY_SHARE)
                except (TopicReadError, KafkaException) as exc:
                    if not warned:  # the registry may not exist yet: once, then quietly retry
                        log.warning("enrollments per certificate not counted yet: %s", exc)
                        warned = True
                    self._stop.wait(self._interval_s)
                    continue
                now = time.monotonic()
                if view.loaded and now >= next_count:
                    next_count = now + self._interval_s
                    self._counts = dict(Counter(t for _, t in view.items() if t is not None))
        finally:
            if view is not None:
                view.close()
