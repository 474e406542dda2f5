"""Push policies from the compacted `mdm.push.config.v1`, applied live, and what they mean here.

A policy names a certificate (or '*' for the default) and sets the per-minute rate of each lane,
the scope and the shard count. The rate one *bucket* (one job key, one lane) gets is:

- FARM scope: `rate / shards` — one sender owns each key's partition, so each shard's bucket
  is exact and together they make the farm-wide rate;
- PER_INSTANCE scope: `rate * live senders / shards` — every live sender gets the full rate
  (Afaria's "Per Server" box), which the farm sees as the rate times the senders.

The topic is read from the beginning by a group-less consumer and then continuously in the main
loop, so a change is in force at the next loop iteration (well within the promised minute).
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from services.common.errors import DecodeError
from services.common.kafka import assign_from_beginning
from services.common.policy import DEFAULT_CERTIFICATE, PushPolicy
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

class PolicyBook:
    """Current policy per certificate; the certificate's own, else '*', else the settings'."""

    def __init__(self, fallback: PushPolicy) -> None:
        self._fallback = fallback
        self._policies: dict[str, PushPolicy] = {}
        #: Bumped on every change, so callers can cache what they derived from the book.
        self.version = 0

    def apply(self, key: str, policy: PushPolicy | None) -> None:
        """A record from the config topic: a policy, or a tombstone (None) removing `key`'s."""
        if policy is None:
            self._policies.pop(key, None)
        else:
            self._policies[policy.certificate] = policy
        self.version += 1

    def for_topic(self, topic: str) -> PushPolicy:
        policy = self._policies.get(topic)
        if policy is None:
            policy = self._policies.get(DEFAULT_CERTIFICATE, self._fallback)
        return policy


def certificate_of_key(key: str) -> str:
    """The certificate topic of a job key (`topic` or `topic#shard`)."""
    return key.split("#", 1)[0]


class PolicyFeed:
    """Reads the config topic into a PolicyBook: all of it at start, then whatever arrives."""

    def __init__(
        self, kafka: KafkaSettings, topic: str, serde: AvroSerde, book: PolicyBook
    ) -> None:
        self._book = book
        self._serde = serde
        # No group: every sender reads every policy, and nothing is ever committed.
        self._consumer = Consumer(
            kafka.consumer_config(
                f"mdmpush-sender-config-{uuid.uuid4().hex}",
                **{"enable.auto.commit": False, "enable.partition.eof": False},
            )
        )
        #: Partition -> end offset at start still to be read up to (see `load`).
        self._unread = assign_from_beginning(self._consumer, topic, timeout_s=10)
        self.bad_records = 0

    def load(self, timeout_s: float = 10.0) -> bool:
        """Read up to the end the topic has now, so the first jobs see the right policy.

        An empty poll is no proof of having read everything (a new consumer takes a moment to
        connect and fetch), so this reads until every partition's end offset, taken first, is
        reached. False if `timeout_s` passed first (then the main loop catches up).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._unread:
                return True
            self.poll(0.1)
        log.warning("policies not fully read within %.0fs: defaults apply until they are",
                    timeout_s)
        return False

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived; returns how many."""
        messages = self._consumer.consume(num_messages=100, timeout=timeout_s)
        for msg in messages:
            if msg.error():
                continue
            partition = msg.partition() or 0
            if (msg.offset() or 0) + 1 >= self._unread.get(partition, 0):
                self._unread.pop(partition, None)
            key = (msg.key() or b"").decode("utf-8", "replace")
            if msg.value() is None:
                self._book.apply(key, None)
                continue
            try:
                record = self._serde.decode_as(msg.value(), "PushPolicy")
            except DecodeError as exc:
                self.bad_records += 1
                log.warning("ignoring undecodable policy at offset %s: %s", msg.offset(), exc)
                continue
            self._book.apply(key, PushPolicy.from_record(record))
        return len(messages)

    def close(self) -> None:
        self._consumer.close()


class LiveSenders:
    """How many members the sender group has, refreshed in the background of the loop.

    Only PER_INSTANCE policies need it. The admin call returns a future, checked without
    blocking, so the poll loop never waits on it.
    """

    def __init__(self, kafka: KafkaSettings, group_id: str, refresh_s: float) -> None:
        self._admin = AdminClient(kafka.admin_config())
        self._group = group_id
        self._refresh_s = refresh_s
        self._pending: Future[Any] | None = None
        self._next = 0.0
        self.count = 1

    def poll(self) -> None:
        now = time.monotonic()
        if self._pending is not None and self._pending.done():
            try:
                self.count = max(1, len(self._pending.result().members))
            except Exception as exc:  # the admin client raises KafkaException and others
                log.warning("could not describe group %s: %s", self._group, exc)
            self._pending = None
        if self._pending is None and now >= self._next:
            self._next = now + self._refresh_s
            self._pending = self._admin.describe_consumer_groups([self._group])[self._group]
