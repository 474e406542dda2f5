"""Push policies from the compacted `mdm.push.config.v1`, applied live, and what they mean here.

A policy names a certificate (or '*' for the default) and sets the per-minute rate of each lane,
the scope and the shard count. The rate one *bucket* (one job key, one lane) gets is:

- FARM scope: `rate / shards` — one sender owns each key's partition, so each shard's bucket
  is exact and together they make the farm-wide rate;
- PER_INSTANCE scope: `rate * live senders / shards` — every live sender gets the full rate
  (Afaria's "Per Server" box), which the farm sees as the rate times the senders.

The topic is read to its end before the first job (`CompactedView.load`) and then continuously in
the main loop, so a change is in force at the next loop iteration (well within the promised
minute).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any, Protocol

from confluent_kafka.admin import AdminClient

from services.common.kafka.compacted import CompactedView
from services.common.kafka.logs import client_logger
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


class PolicyView(Protocol):
    """The policies on the config topic by certificate, '*' as the fallback key
    (`CompactedView[PushPolicy]`; a dict-backed fake in unit tests)."""

    def load(self, timeout_s: float = 30.0) -> None: ...
    def poll(self, timeout_s: float = 0.0) -> int: ...
    def get(self, key: str) -> PushPolicy | None: ...
    def close(self) -> None: ...


def policy_view(kafka: KafkaSettings, topic: str, serde: AvroSerde) -> CompactedView[PushPolicy]:
    """The config topic as a live view of PushPolicy records."""
    return CompactedView(
        kafka, topic, lambda value: PushPolicy.from_record(serde.decode_as(value, "PushPolicy")),
        name="sender-policies",
    )


class PolicyBook:
    """Current policy per certificate: its own, else '*', else the settings' fallback."""

    def __init__(self, fallback: PushPolicy, view: PolicyView) -> None:
        self._fallback = fallback
        self._view = view

    def load(self, timeout_s: float = 10.0) -> None:
        """Read every policy already published, so the first jobs see the right one; if that
        takes longer than `timeout_s`, the fallback applies until the loop has caught up."""
        try:
            self._view.load(timeout_s)
        except Exception as exc:  # TopicReadError and Kafka errors: the loop catches up later
            log.warning("policies not fully read (%s): defaults apply until they are", exc)

    def poll(self) -> None:
        """Apply the changes that arrived (from the loop, without waiting)."""
        self._view.poll(0)

    def for_topic(self, topic: str) -> PushPolicy:
        return self._view.get(topic) or self._fallback

    def close(self) -> None:
        self._view.close()


class LiveSenders:
    """How many members the sender group has, refreshed in the background of the loop.

    Only PER_INSTANCE policies need it. The admin call returns a future, checked without
    blocking, so the poll loop never waits on it.
    """

    def __init__(self, kafka: KafkaSettings, group_id: str, refresh_s: float) -> None:
        self._admin = AdminClient(kafka.admin_config(), logger=client_logger("sender-members"))
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
