"""The check-ins topic read in batches by librdkafka, beside faust rather than through it.

faust hands a stream one event at a time (a task per message to deliver it, a queue, a
processor, an ack under a lock): ~250 µs of Python per check-in on the 2-core machine, which
held the registry build at ~5,000 check-ins/s whatever the agent did with them. Here librdkafka
fetches and `consume()` returns up to `BATCH` records in one call; the fan-out decodes and
applies them in its event loop (`Fanout.ingest_checkins`, synchronous between its awaits, so
it never interleaves with the registry agent on a key) and awaits their produces; only then are
their offsets stored (committed by librdkafka's auto-commit and at every revocation), so no
offset passes an unsaved change.

Which partitions this worker reads:
- co-partitioned (the check-ins topic has the registry's partition count): partition p of the
  check-ins is read by the worker faust gave registry partition p, assigned by hand when faust
  completes a rebalance (its tables recovered) and released when faust revokes; a record whose
  key maps to p is applied here, any other is forwarded (registry-updates), so a key's path
  depends on the producer's partitioner only, never on the assignment;
- otherwise the partitions are shared out by a consumer group of their own and every record is
  forwarded to its registry partition.
Either way the offsets are the group `<app id>-checkins`'s (faust's group no longer reads the
topic).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from mode import Service

from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Records per `consume()`: one batch of decoding, applying and one awaited flush.
BATCH = 5000
#: The longest `consume()` waits for a first record (also the longest a revocation waits).
WAIT_S = 0.05

Handler = Callable[[list[Message], bool], Awaitable[None]]


class CheckinReader(Service):
    """Runs `handle(messages, copartitioned)` on batches of the check-ins topic, storing their
    offsets once it returns."""

    def __init__(self, app: faust.App, kafka: KafkaSettings, topic: str, partitions: int,
                 follow_topic: str, handle: Handler) -> None:
        """`follow_topic`: the internal topic whose partitions faust assigns like the registry's
        (registry-updates): its assignment is the registry partitions held here."""
        super().__init__()
        self.app = app
        self.topic = topic
        self.partitions = partitions
        self.follow_topic = follow_topic
        self.handle = handle
        self.consumer = Consumer(
            kafka.consumer_config(f"{app.conf.id}-checkins",
                                  **{"fetch.wait.max.ms": 20, "queued.min.messages": 20_000}),
            logger=client_logger("fanout-checkins"),
        )
        self.copartitioned = False
        self._subscribed = False
        self._held: set[int] = set()
        self._lock = asyncio.Lock()

    async def on_start(self) -> None:
        meta = await asyncio.to_thread(self.consumer.list_topics, self.topic, 30)
        found = meta.topics.get(self.topic)
        self.copartitioned = bool(found and not found.error
                                  and len(found.partitions) == self.partitions)
        if not self.copartitioned:
            log.info("check-ins topic %s is not co-partitioned with the registry (%d "
                     "partitions): every check-in is forwarded to its registry partition",
                     self.topic, self.partitions)
        # Nothing is read before faust's first rebalance completes: its internal topics
        # (registry-updates) exist and its tables are recovered from then on.
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_rebalance_complete.connect(self._on_rebalanced)
        self.add_future(self._run())

    async def on_stop(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._commit)
            await asyncio.to_thread(self.consumer.close)

    async def _on_revoked(self, _app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        """Faust is handing registry partitions away: finish the batch, commit, release all."""
        async with self._lock:
            if self._held and self.copartitioned:
                await asyncio.to_thread(self._commit)
                self.consumer.unassign()
                self._held = set()

    async def _on_rebalanced(self, _app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        """Faust recovered its tables: read the check-ins partitions of its registry partitions
        (from this group's committed offsets)."""
        if not self.copartitioned:
            if not self._subscribed:
                self.consumer.subscribe([self.topic])
                self._subscribed = True
            return
        wanted = {tp.partition for tp in self.app.consumer.assignment()
                  if tp.topic == self.follow_topic}
        async with self._lock:
            if wanted != self._held:
                if self._held:
                    await asyncio.to_thread(self._commit)
                self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(wanted)])
                self._held = wanted
                log.info("reading check-ins partitions %s", sorted(wanted))

    def _commit(self) -> None:
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:  # _NO_OFFSET: nothing stored since the last commit
            if "NO_OFFSET" not in str(exc):
                log.warning("committing check-in offsets failed: %s", exc)

    async def _run(self) -> None:
        while not self.should_stop:
            async with self._lock:
                reading = bool(self._held) or self._subscribed
                messages = (await asyncio.to_thread(self.consumer.consume, BATCH, WAIT_S)
                            if reading else [])
                records = [m for m in messages if m.error() is None]
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("check-ins: %s", msg.error())
                if records:
                    await self.handle(records, self.copartitioned)
                    self._store(records)
            if not reading:
                await asyncio.sleep(WAIT_S)

    def _store(self, records: list[Message]) -> None:
        """The next offset of each partition of the batch, for the next commit."""
        last: dict[int, int] = {}
        for msg in records:
            last[msg.partition() or 0] = msg.offset() or 0
        self.consumer.store_offsets(offsets=[TopicPartition(self.topic, p, o + 1)
                                             for p, o in last.items()])
