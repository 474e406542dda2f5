"""faust's in-memory table store, remembering how far its partitions are in their changelogs.

faust's memory store says it has persisted nothing (`persisted_offset` is None), so every
rebalance that hands a worker a partition again makes it re-read that partition's whole
changelog, although the table's contents never left memory: a worker frozen (SIGSTOP) past the
group's session timeout came back to a rebalance and re-read its registry for 74 s. This store
remembers, per changelog partition, the last offset it holds: the last record applied at
recovery, or the last record this worker wrote and Kafka acknowledged (`TableWriter`'s writes go
through librdkafka, not faust, so the fan-out reports their offsets with `set_persisted_offset`).
Recovery then reads only what was written after it, by this worker or another one (the changelog
orders every write of a partition). A partition faust takes away loses its offset (faust drops
its keys).

What a partition needs from the start (a new process, a partition new to this worker) is read
here, before faust's recovery, by librdkafka in batches up to the end offset it has then; faust
reads only what comes after. faust's own recovery hands each record through its per-event
machinery: ~500 records/s on the loaded 2-core machine, half an hour for 1,000,000 enrollments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from faust.serializers.codecs import get_codec
from faust.stores import STORES
from faust.stores.memory import Store
from faust.topics import Topic
from faust.types import TP, CodecArg, EventT

from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from services.fanout.changelog import from_json

log = logging.getLogger(__name__)

#: The store URL scheme of `MemoryStore` (faust looks store classes up by scheme).
SCHEME = "mdmpush-memory"

#: Kafka settings per faust app id, for the stores' own reads (`load_with`).
_KAFKA: dict[str, KafkaSettings] = {}


def load_with(app_id: str, kafka: KafkaSettings) -> None:
    """Let the stores of app `app_id` read their changelogs themselves with `kafka` (without
    it they leave the whole recovery to faust)."""
    _KAFKA[app_id] = kafka


def read_changelog(kafka: KafkaSettings, topic: str, partitions: list[int],
                   loads: Callable[[bytes], Any]
                   ) -> tuple[dict[str, Any], dict[str, int], set[str], dict[int, int]]:
    """(latest value per key, partition per key, keys whose latest record is a tombstone, last
    offset read per partition) of `partitions` of a changelog as they are now; values decoded
    by `loads`."""
    values: dict[str, Any] = {}
    where: dict[str, int] = {}
    deleted: set[str] = set()
    last: dict[int, int] = {}
    key_loads = json.loads
    for msg in read_to_end(kafka, topic, partitions=partitions, timeout_s=3600,
                           name="fanout-table-load"):
        key = key_loads(msg.key() or b"null")
        raw = msg.value()
        partition = msg.partition() or 0
        if raw is None:
            values.pop(key, None)
            deleted.add(key)
        else:
            values[key] = loads(raw)
            where[key] = partition
            deleted.discard(key)
        last[partition] = msg.offset() or 0
    return values, where, deleted, last


def value_loads(serializer: CodecArg) -> Callable[[bytes], Any]:
    """How the values of a changelog written with `serializer` are read here: faust's JSON codec
    as `from_json` (field names shared across records), any other codec as it is."""
    if serializer is None or serializer == "json":
        return from_json
    return get_codec(serializer).loads


class MemoryStore(Store):
    """`faust.stores.memory.Store` with the changelog offsets of what it holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offsets: dict[TP, int] = {}

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        """Read the changelog partitions assigned here that this store holds nothing of (faust
        calls this before its recovery asks for `persisted_offset`)."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        kafka = _KAFKA.get(self.app.conf.id)
        topic = self.table.changelog_topic.get_topic_name()
        todo = sorted(tp.partition for tp in assigned
                      if tp.topic == topic and tp not in self._offsets)
        if kafka is None or not todo:
            return
        started = time.monotonic()
        loads = value_loads(cast(Topic, self.table.changelog_topic).value_serializer)
        values, where, deleted, last = await asyncio.to_thread(read_changelog, kafka, topic, todo,
                                                               loads)
        for key in deleted:
            self.data.pop(key, None)
        self.data.update(values)
        self._key_partition.update(where)  # faust drops them if the partition goes
        for partition, offset in last.items():
            self.set_persisted_offset(TP(topic, partition), offset)
        log.info("%s: %d keys of %d partition(s) read in %.1fs", topic, len(values), len(todo),
                 time.monotonic() - started)

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        if offset > self._offsets.get(tp, -1):
            self._offsets[tp] = offset

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        for event in events:
            self.set_persisted_offset(event.message.tp, event.message.offset)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        """faust drops the recovered keys of partitions no longer held here: their offsets go
        too, so a partition that comes back is read from the start again."""
        await super().on_recovery_completed(active_tps, standby_tps)
        held = {tp.partition for tp in active_tps}
        for tp in [tp for tp in self._offsets if tp.partition not in held]:
            del self._offsets[tp]


STORES.aliases.setdefault(SCHEME, f"{__name__}:MemoryStore")
