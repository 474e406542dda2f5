"""A compacted topic as a live dict, with a fallback key: the one reader of the config topic.

The config topic (push policies) is keyed by certificate, not by anything a service partitions
on, so every instance reads all of it with a group-less consumer (nothing committed, always from
the beginning): `load()` returns once everything the topic held has been read, so the first jobs
after a restart use the right policy, and `poll()` applies what arrives later. `get(key)` answers
the key's value, else the fallback key's (`'*'`: the default policy), else None.

An undecodable value is logged, counted and skipped, not dead-lettered: every instance re-reads
the whole topic at each start and would dead-letter it again each time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, ItemsView
from typing import Generic, TypeVar

from confluent_kafka import KafkaException, Message

from services.common.errors import MdmPushError, TopicReadError
from services.common.kafka.reader import assign_from_beginning, reader_consumer
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long the first load()/poll() waits for the topic's metadata and end offsets.
ASSIGN_TIMEOUT_S = 10.0

#: Records asked for per consume() call.
BATCH = 500

#: What a decoder may raise for bad bytes (serde errors, out-of-range or missing fields).
UNDECODABLE = (MdmPushError, ValueError, KeyError, TypeError)


class CompactedView(Generic[T]):
    """The latest value per key of a compacted topic; tombstones delete.

    A value the decoder turns into None is not kept either (`get` answers the fallback for
    it, as it always did, and `items` leaves it out): a view keeps only what its decoder keeps.
    The sender's enrollment census decodes every registry record that is not ENROLLED to None,
    and those are mostly pending Authenticates of devices that never enrolled (kept by the
    fan-out for its TTL, 24 h): kept here, each sender held a key per such device, as many as a
    flood of made-up UDIDs brings.

    Not thread-safe for writers: one thread calls load()/poll(); get() from other threads sees
    each key's old or new value (a dict lookup), never a torn one."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        decode: Callable[[bytes], T],
        *,
        name: str,
        fallback_key: str = "*",
        on_undecodable: Callable[[Message, Exception], None] | None = None,
    ) -> None:
        self.topic = topic
        self.fallback_key = fallback_key
        self._decode = decode
        self._on_undecodable = on_undecodable
        self._consumer = reader_consumer(kafka, name)
        self._values: dict[str, T] = {}
        self._unread: dict[int, int] | None = None  # partition -> end offset still to reach
        #: Values that could not be decoded (skipped), since start.
        self.undecodable = 0

    @property
    def loaded(self) -> bool:
        """True once everything the topic held at the first load()/poll() has been applied."""
        return self._unread is not None and not self._unread

    def load(self, timeout_s: float = 30.0) -> None:
        """Read up to the end offsets the topic has now (taken at the first load()/poll()).

        An empty poll is no proof of having read everything (a new consumer takes a moment to
        connect and fetch), so this reads until each partition's end offset is reached. Raises
        TopicReadError if `timeout_s` passes first; poll() then keeps catching up."""
        deadline = time.monotonic() + timeout_s
        self._assign()
        while not self.loaded:
            if time.monotonic() > deadline:
                raise TopicReadError(
                    f"{self.topic} not read to its end within {timeout_s:.0f}s "
                    f"(partitions left: {sorted(self._unread or {})})")
            self.poll(0.1)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived; returns how many."""
        self._assign()
        messages = self._consumer.consume(num_messages=BATCH, timeout=timeout_s)
        for msg in messages:
            if msg.error() is None:
                self._apply(msg)
        return len(messages)

    def _assign(self) -> None:
        if self._unread is None:
            try:
                self._unread = assign_from_beginning(self._consumer, self.topic, ASSIGN_TIMEOUT_S)
            except KafkaException as exc:
                raise TopicReadError(f"Kafka did not answer for {self.topic}: {exc.args[0]}") \
                    from exc

    def _apply(self, msg: Message) -> None:
        unread = self._unread or {}
        partition = msg.partition() or 0
        if (msg.offset() or 0) + 1 >= unread.get(partition, 0):
            unread.pop(partition, None)
        key = (msg.key() or b"").decode("utf-8", "replace")
        value = msg.value()
        if value is None:
            self._values.pop(key, None)
            return
        try:
            decoded = self._decode(value)
        except UNDECODABLE as exc:
            self.undecodable += 1
            log.warning("%s: skipping the undecodable value of %r at %d/%d: %s",
                        self.topic, key, partition, msg.offset() or 0, exc)
            if self._on_undecodable is not None:
                self._on_undecodable(msg, exc)
            return
        if decoded is None:  # nothing the view keeps: as absent as after a tombstone
            self._values.pop(key, None)
        else:
            self._values[key] = decoded

    def get(self, key: str) -> T | None:
        """`key`'s value, else the fallback key's, else None."""
        found = self._values.get(key)
        if found is None:
            found = self._values.get(self.fallback_key)
        return found

    def items(self) -> ItemsView[str, T]:
        """Every key's current value (the fallback key included, under its own name)."""
        return self._values.items()

    def close(self) -> None:
        """Leave the topic (nothing to commit)."""
        self._consumer.close()
