"""Expansion of one slice into PushJobs and SKIPPED outcomes, chunk by acknowledged chunk.

Targets are handled in enrollment-id order, `chunk_size` at a time: a chunk is queued on the
producer, awaited until Kafka acknowledged all of it, then `progress[slice key]` records the
last enrollment id done. A redelivered slice (crash before its offset was committed, or the same
request published again) resumes after that id, or is skipped once marked done. Duplicates are
therefore bounded by the chunks whose progress record had not reached the changelog when the
worker died: usually none, at most the chunks of one commit interval.

A record Kafka refuses permanently (a job too large for the topic, a topic the fan-out may not
write) would be refused again on every redelivery, so the slice's request goes to the DLQ with
the reason, the slice is marked done, and expansion goes on with the next slice. Every target
left without its record (its job or SKIPPED outcome refused) and every target of the slice after
that chunk gets a DEAD_LETTERED outcome with the refusal, so each (request, target) still ends
in exactly one terminal state (a target whose job was acknowledged in the refused chunk is
pushed). A refused job names only its key, the certificate topic its chunk's other jobs share:
when Kafka refused some but not all of a key's jobs in the chunk (a batch over a topic limit
below the producer's), which were pushed is unknown, and all of them get the outcome (logged:
a pushed one then has a verdict too) rather than none. Those outcomes are acknowledged before the
slice is marked done; one Kafka refuses too raises DeliveryError, which stops the worker before
its offset is committed (app.py).

A pushable target may still get no job: a bulk target the correlator marked INACTIVE is
SKIPPED `inactive` (activity.py), and a bulk target with an outstanding push is SKIPPED
`coalesced`, riding on that push (coalesce.py). Every job produced becomes its enrollment's
carrier. Carriers' changelog records go through `carriers_out`, the registry's producer, which
also writes the tombstone of a carrier a check-in ends: one producer keeps a carrier's set and
clear in the order they happened. They are not awaited with the chunk: a carrier is advice, and
one lost in a crash only means a push instead of a ride.

The tables are passed in as mappings (the carriers as a `TableWriter`), so the rules do not
depend on faust; the agent calls `expand` inside its stream iteration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import DeliveryError
from services.common.serde import AvroSerde
from services.fanout import metrics
from services.fanout.activity import ActivityBook
from services.fanout.changelog import TableWriter
from services.fanout.coalesce import Carrier, carrier, rider_at, rides_on
from services.fanout.dead_letters import DeadLetters
from services.fanout.jobs import (
    Lane,
    build_job,
    dead_lettered_outcome,
    job_id,
    job_key,
    registry_partition,
    skipped_outcome,
)
from services.fanout.output import BatchProducer, Refusal
from services.fanout.policies import ShardBook
from services.fanout.registry import Record, SkipReason, skip_reason

log = logging.getLogger(__name__)

Target = tuple[str, Record | None]

#: Where a record was read: topic, partition, offset.
Source = tuple[str, int, int]


@dataclass
class Expander:
    registry: Mapping[str, Record]
    progress: MutableMapping[str, dict[str, Any]]
    producer: BatchProducer
    shards: ShardBook
    serde: AvroSerde
    topics: Topics
    clock: Clock
    partitions: int
    chunk_size: int
    dead_letters: DeadLetters
    activity: ActivityBook
    carriers: TableWriter
    carriers_out: BatchProducer
    #: Coalescing window in simulated ms; None: coalescing is off (no carrier is kept either).
    coalesce_window_ms: int | None

    async def expand(
        self, key: str, partition: int, message: dict[str, Any], source: Source
    ) -> None:
        """Expand the slice `key`; `source` is where its request was read (for the DLQ)."""
        done = self.progress.get(key)
        if done is not None and done["done"]:
            metrics.DUPLICATE_SLICES.inc()
            return
        request = message["request"]
        ids: list[str] | None = message["enrollment_ids"]
        targets = (
            self._tenant_targets(request["tenant"], partition)
            if ids is None
            else [(eid, self.registry.get(eid)) for eid in sorted(ids)]
        )
        if done is not None:
            targets = [t for t in targets if t[0] > done["last"]]
        lane = Lane.of(request, self.topics)
        last = done["last"] if done is not None else ""
        for start in range(0, len(targets), self.chunk_size):
            chunk = targets[start : start + self.chunk_size]
            refused, jobs_by_key = await self._produce_chunk(request, lane, chunk, partition)
            if refused:
                await self._dead_letter(key, request, source, refused, last)
                rest = [eid for eid, _ in targets[start + self.chunk_size :]]
                lost = self._refused_targets(lane, chunk, refused, jobs_by_key, partition)
                await self._settle_refused(request, lane, lost, rest, refused[0].reason)
                break
            last = chunk[-1][0]
            self.progress[key] = {"last": last, "done": False}
        self.progress[key] = {"last": last, "done": True}

    def _tenant_targets(self, tenant: str, partition: int) -> list[Target]:
        """Every enrollment of `tenant` in `partition` (the local table may hold others)."""
        n = self.partitions
        return sorted(
            (eid, record)
            for eid, record in self.registry.items()
            if record["tenant"] == tenant and registry_partition(eid, n) == partition
        )

    async def _dead_letter(
        self, key: str, request: dict[str, Any], source: Source, refused: list[Refusal],
        last: str,
    ) -> None:
        """Set the slice's request aside with why its records were refused."""
        topic, partition, offset = source
        after = f"after {last!r} " if last else ""
        reason = (f"slice {key}: Kafka refused {len(refused)} record(s) permanently; targets "
                  f"{after}not expanded. First: {refused[0].reason}")
        metrics.REFUSED.labels("job").inc(len(refused))
        metrics.DEAD_LETTERED_SLICES.inc()
        log.warning("request %s set aside in the DLQ from %s[%d]@%d: %s", request["request_id"],
                    topic, partition, offset, reason)
        self.dead_letters.write(
            source_topic=topic, partition=partition, offset=offset,
            key=str(request["tenant"]).encode(),
            value=self.serde.encode("NotificationRequest", request, self.topics.dlq),
            reason=reason,
            extra_headers=[("mdmpush.request_id", str(request["request_id"])),
                           ("mdmpush.slice", key)],
        )
        await self.dead_letters.acknowledged()

    def _refused_targets(
        self, lane: Lane, chunk: list[Target], refused: list[Refusal],
        jobs_by_key: dict[str, list[str]], partition: int,
    ) -> list[tuple[str, str]]:
        """The targets of `chunk` left without a record, in chunk order, each with its refusal.
        A refused job's carrier is dropped: that push will never be made, nothing may ride on
        it."""
        lost: dict[str, str] = {}
        refused_jobs: dict[str, list[str]] = {}
        for refusal in refused:
            key = _text(refusal.key)
            if refusal.topic == lane.jobs_topic:
                refused_jobs.setdefault(key, []).append(refusal.reason)
            else:  # a SKIPPED outcome: keyed by its enrollment
                lost[key] = refusal.reason
        for key, reasons in refused_jobs.items():
            eids = jobs_by_key[key]
            if len(reasons) < len(eids):
                log.error("Kafka refused %d of the %d jobs keyed %r of a chunk: all %d get a "
                          "DEAD_LETTERED outcome, the pushed ones a verdict too", len(reasons),
                          len(eids), key, len(eids))
            for eid in eids:
                lost[eid] = reasons[0]
                if self.coalesce_window_ms is not None:
                    self.carriers.delete(self.carriers_out, eid, partition)
        return [(eid, lost[eid]) for eid, _ in chunk if eid in lost]

    async def _settle_refused(
        self, request: dict[str, Any], lane: Lane, lost: list[tuple[str, str]], rest: list[str],
        first_reason: str,
    ) -> None:
        """A DEAD_LETTERED outcome, acknowledged, for each `lost` target (with its refusal) and
        each of `rest` (never expanded)."""
        not_expanded = f"request dead-lettered, not expanded: {first_reason}"
        targets = lost + [(eid, not_expanded) for eid in rest]
        now, outcomes, encode = self.clock.now_ms(), self.topics.outcomes, self.serde.encode
        for eid, reason in targets:
            outcome = dead_lettered_outcome(request, eid, reason, lane.name, now)
            self.producer.produce(outcomes, encode("PushOutcome", outcome, outcomes), eid)
        still_refused = await self.producer.flush()
        if still_refused:
            raise DeliveryError(
                f"request {request['request_id']}: {len(still_refused)} DEAD_LETTERED "
                f"outcome(s) refused: {still_refused[0].reason}")
        metrics.DEAD_LETTERED_TARGETS.inc(len(targets))
        log.warning("request %s: %d target(s) DEAD_LETTERED, its records refused by Kafka: %s",
                    request["request_id"], len(targets), first_reason)

    def _withheld(
        self, eid: str, jid: str, lane: Lane, now_ms: int
    ) -> tuple[SkipReason, Carrier | None] | None:
        """Why a pushable target gets no job (and the carrier it rides on), or None."""
        if lane.name != "BULK":
            return None  # priority: never skipped as inactive, never coalesced
        if self.activity.inactive(eid):
            return SkipReason.INACTIVE, None
        if self.coalesce_window_ms is not None:
            carried_by = rides_on(self.carriers.data, eid, jid, lane.name, now_ms)
            if carried_by is not None:
                return SkipReason.COALESCED, carried_by
        return None

    async def _produce_chunk(
        self, request: dict[str, Any], lane: Lane, chunk: list[Target], partition: int
    ) -> tuple[list[Refusal], dict[str, list[str]]]:
        """Produce the chunk's jobs, carriers and skips; returns what Kafka refused permanently,
        and the targets given a job, by the job's key (a refused job names only its key)."""
        now = self.clock.now_ms()
        tenant, kind = request["tenant"], request["kind"]
        produce, encode = self.producer.produce, self.serde.encode
        skipped: dict[str, int] = {}
        jobs_by_key: dict[str, list[str]] = {}
        jobs = 0
        for eid, record in chunk:
            reason = skip_reason(record, tenant, kind)
            carried_by: Carrier | None = None
            if reason is None:
                jid = job_id(request["request_id"], eid)
                withheld = self._withheld(eid, jid, lane, now)
                if withheld is not None:
                    reason, carried_by = withheld
            if reason is None:
                assert record is not None  # skip_reason reports a missing record as unknown
                job = build_job(request, record, lane.name, now)
                key = job_key(record["topic"], eid, self.shards.shards(record["topic"]))
                produce(lane.jobs_topic, encode("PushJob", job, lane.jobs_topic), key)
                jobs_by_key.setdefault(key, []).append(eid)
                if self.coalesce_window_ms is not None:
                    self.carriers.put(self.carriers_out, eid,
                                      carrier(job["job_id"], now, self.coalesce_window_ms),
                                      partition)
                jobs += 1
            else:
                if carried_by is None:
                    outcome = skipped_outcome(request, eid, record, reason, lane.name, now)
                else:
                    at = rider_at(carried_by, request["requested_at"], now)
                    outcome = skipped_outcome(request, eid, record, reason, lane.name, at,
                                              rides_on=carried_by["job_id"])
                value = encode("PushOutcome", outcome, self.topics.outcomes)
                produce(self.topics.outcomes, value, eid)
                skipped[reason] = skipped.get(reason, 0) + 1
        refused = await self.producer.flush()
        metrics.JOBS.labels(lane.name).inc(max(0, jobs - len(refused)))
        for reason_name, count in skipped.items():
            metrics.SKIPPED.labels(reason_name).inc(count)
        return refused, jobs_by_key


def _text(key: bytes | str | None) -> str:
    """A record key as the fan-out wrote it (a delivery report gives it back as bytes)."""
    return key.decode() if isinstance(key, bytes) else str(key)
