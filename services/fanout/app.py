"""The faust app: three agents, a check-in reader, three tables and the topics between them.

See the package docstring for why the data flows this way. Every agent runs with concurrency 1:
faust-streaming commits past in-flight records when an agent runs several actors.
Check-ins are read in batches by librdkafka beside faust (checkin_reader.py: faust's per-event
streams cost ~250 µs a record); forwarded registry updates in batches (`take_events`). A batch's
changelog records and DeviceRecords (one per enrollment changed, however many of its records the
batch held) and its forwarded updates go through two `BatchProducer`s (one reporting the
acknowledgements the table stores need, for the changelogs; one reporting refusals only, for
the registry topic and the forwarded updates), both awaited before the batch's
offsets can be stored or its events acked. Slices go through faust's producer, which faust
flushes before it commits; jobs and SKIPPED outcomes go through `BatchProducer`, awaited per
chunk; dead letters go through `DeadLetters`, awaited per record.
The app is `faust_compat.App`: faust with two fixes to how a starting worker hands fetched
records to its streams (every override of faust internals lives in faust_compat.py). Internal
topics and table changelogs get MDMPUSH_KAFKA_REPLICATION_FACTOR / _MIN_INSYNC_REPLICAS, clamped
to the broker count.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ParamSpec, cast

import faust
from confluent_kafka import Message
from mode import Service

from services.common.admin import Replication
from services.common.catalogue import COMPACTION, Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka.dead_letter import DlqLimitExceeded
from services.common.kafka.logs import quiet_async_clients
from services.common.kafka.producer import DeliveryError
from services.common.limits import InvalidInput, check_checkin_event, check_notification_request
from services.common.serde import make_serde
from services.common.settings import KafkaSettings
from services.fanout import metrics, store
from services.fanout.activity import ActivityBook
from services.fanout.changelog import DeviceRecordCodec, TableWriter, to_json
from services.fanout.checkin_reader import CheckinReader
from services.fanout.dead_letters import DeadLetters
from services.fanout.dead_tokens import DeadTokenFeed
from services.fanout.expand import Expander
from services.fanout.faust_compat import App, check_overrides
from services.fanout.jobs import registry_partition
from services.fanout.output import BatchProducer, Refusal
from services.fanout.policies import ShardBook
from services.fanout.registry import (
    CheckinRefusal,
    apply_checkin,
    checkin_refusal,
    clamp_future,
    expired_pending,
    mark_token_dead,
)
from services.fanout.settings import FanoutSettings
from services.fanout.slices import plan

log = logging.getLogger(__name__)
P = ParamSpec("P")

#: Input records handled per batch, and the longest a partial batch waits for more (a lone
#: check-in or 410 is applied within this time).
INGEST_BATCH = 2000
INGEST_WITHIN_S = 0.05

#: Exit status of a worker that stopped so that no offset is committed past unfinished work.
EXIT_UNSAFE_TO_COMMIT = 3


class _ThreadService(Service):
    """Runs a reader thread (policies, activity, dead tokens) for as long as the app runs."""

    def __init__(self, reader: ShardBook | ActivityBook | DeadTokenFeed) -> None:
        super().__init__()
        self.reader = reader

    async def on_start(self) -> None:
        self.reader.start()

    async def on_stop(self) -> None:
        self.reader.stop()


def create_app(
    settings: FanoutSettings | None = None,
    kafka: KafkaSettings | None = None,
    rep: Replication | None = None,
) -> faust.App:
    """A configured fan-out app; run it with `faust.Worker(app).execute_from_commandline()`.

    `rep`: of the internal topics and changelogs faust creates; the runner passes the settings'
    clamped to the cluster (`admin.replication`), building an app without a broker takes the
    settings as they are."""
    settings = settings or FanoutSettings()
    kafka = kafka or KafkaSettings()
    check_overrides()
    quiet_async_clients()
    rep = rep or Replication(kafka.replication_factor, kafka.min_insync_replicas)
    app_id = settings.effective_app_id(kafka.topic_prefix)
    app = App(
        app_id,
        broker=[f"kafka://{host}" for host in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(kafka),
        broker_client_id=kafka.client_id,
        broker_session_timeout=max(kafka.session_timeout_ms, 6000) / 1000,
        broker_commit_interval=settings.commit_interval_s,
        store=f"{store.SCHEME}://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=rep.factor,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
        key_serializer="json",
        value_serializer="json",
    )
    store.load_with(app_id, kafka)
    Fanout(app, settings, kafka, rep.config())
    return app


class Fanout:
    """Wires the agents of one app; kept as an object so the agents share the clients."""

    def __init__(
        self,
        app: faust.App,
        settings: FanoutSettings,
        kafka: KafkaSettings,
        internal_config: dict[str, str],
    ) -> None:
        self.app = app
        self.partitions = settings.partitions
        self.topics = Topics(kafka.topic_prefix)
        self.serde = make_serde(
            kafka.schema_registry_url,
            kafka.schema_registry_basic_auth.get_secret_value()
            if kafka.schema_registry_basic_auth else None,
        )
        self.clock = Clock.from_settings()
        self.shards = ShardBook(kafka, self.topics.config, self.serde)
        self.activity = ActivityBook(kafka, self.topics.activity, self.serde)
        self.policy_wait_s = settings.policy_load_timeout_s
        self.pending_ttl_ms = settings.pending_enrollment_ttl_ms
        self.future_tolerance_ms = settings.future_tolerance_ms
        app.add_dependency(_ThreadService(self.shards))
        app.add_dependency(_ThreadService(self.activity))

        def external(name: str) -> faust.TopicT:
            return app.topic(name, key_serializer="raw", value_serializer="raw")

        def internal(suffix: str) -> faust.TopicT:
            return app.topic(
                f"{app.conf.id}-{suffix}", partitions=self.partitions, internal=True,
                config=internal_config,
            )

        self.dead_letters = DeadLetters(kafka, self.topics.dlq)
        #: DeviceRecords go through librdkafka: queued in C per record, awaited per batch.
        self.registry_out = BatchProducer(kafka, name="fanout-registry")
        #: The registry topic's records and forwarded updates: their offsets are nobody's
        #: concern, so only refusals are reported. One producer per topic keeps each key's
        #: records in order (the sweep's tombstone after the DeviceRecord it deletes).
        self.bulk_out = BatchProducer(kafka, name="fanout-registry-bulk", report_acks=False)
        self._flush_lock = asyncio.Lock()
        self.updates = internal("registry-updates")
        app.add_dependency(_ThreadService(DeadTokenFeed(
            kafka, self.topics.outcomes, self.updates.get_topic_name(), self.partitions,
            f"{app.conf.id}-dead-tokens", self.serde)))
        self.slices = internal("slices")
        changelog_config = {**internal_config, **COMPACTION}
        registry = app.Table("registry", partitions=self.partitions,
                             extra_topic_configs=changelog_config)
        self.registry = TableWriter(registry, DeviceRecordCodec(self.serde, self.topics.registry))
        #: Outstanding push per enrollment (coalesce.py), partitioned like the registry.
        self.carriers = TableWriter(app.Table("carriers", partitions=self.partitions,
                                              extra_topic_configs=changelog_config))
        self._changelogs = {t.changelog: t for t in (self.registry, self.carriers)}
        window = settings.effective_coalesce_window_ms() if settings.coalesce else None
        self.progress = app.Table("slice-progress", partitions=self.partitions,
                                  extra_topic_configs=changelog_config)
        self.expander = Expander(
            registry=registry,
            progress=self.progress,
            producer=BatchProducer(kafka, name="fanout-jobs"),
            shards=self.shards,
            serde=self.serde,
            topics=self.topics,
            clock=self.clock,
            partitions=self.partitions,
            chunk_size=settings.chunk_size,
            dead_letters=self.dead_letters,
            activity=self.activity,
            carriers=self.carriers,
            carriers_out=self.registry_out,
            coalesce_window_ms=window,
        )
        app.timer(interval=settings.registry_sweep_interval_s, name="fanout.sweep")(
            self.sweep_pending)
        app.add_dependency(CheckinReader(
            app, kafka, self.topics.checkins, self.partitions, self.updates.get_topic_name(),
            _exits_without_commit(self.ingest_checkins)))
        app.agent(external(self.topics.requests), name="requests", concurrency=1)(
            _exits_without_commit(self.route_requests)
        )
        app.agent(self.updates, name="registry", concurrency=1)(
            _exits_without_commit(self.apply_updates))
        app.agent(self.slices, name="expand", concurrency=1)(
            _exits_without_commit(self.expand_slices))

    # -- inputs: decode, dead-letter what cannot be read, bring changes to the registry ------
    async def ingest_checkins(self, messages: list[Message], copartitioned: bool) -> None:
        """One batch of check-ins: decoded (poison to the DLQ), then applied where their
        registry partition is the partition they were read from (see `CheckinReader`) or
        forwarded to it, all acknowledged before the reader stores the offsets."""
        self.dead_letters.consumed(len(messages))
        decoded: list[tuple[dict[str, Any], int]] = []
        decode = self.serde.decode_as
        for msg in messages:
            value = msg.value()
            try:  # inline, not `_decode`: a coroutine per record costs more than the decode
                record = decode(value, "CheckinEvent")
                check_checkin_event(record)
            except (DecodeError, InvalidInput) as exc:
                await self._set_aside(exc, value, (msg.topic() or "", msg.partition() or 0,
                                                   msg.offset() or 0),
                                      msg.key(), "CheckinEvent", "checkins")
                continue
            decoded.append((record, msg.partition() or 0))
        # No await from here to the flush: the sweep and the registry agent cannot interleave.
        staged: dict[str, tuple[dict[str, Any], int, str]] = {}
        updates = self.updates.get_topic_name()
        forwarded = 0
        now = self.clock.now_ms()
        for record, source_partition in decoded:
            eid = record["enrollment_id"]
            partition = registry_partition(eid, self.partitions)
            if copartitioned and partition == source_partition:
                self._apply(eid, {"checkin": record}, partition, staged, now)
            else:
                self.bulk_out.produce(updates, to_json({"checkin": record}), to_json(eid),
                                      partition)
                forwarded += 1
        self._publish(staged)
        metrics.REGISTRY_INPUTS.labels("local").inc(len(decoded) - forwarded)
        metrics.REGISTRY_INPUTS.labels("forwarded").inc(forwarded)
        await self._settle([])

    async def route_requests(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            self.dead_letters.consumed()
            msg = event.message
            request = await self._decode(
                event.value, (msg.topic, msg.partition, msg.offset), msg.key,
                "NotificationRequest", "requests", check_notification_request)
            if request is not None:
                source = (msg.topic, msg.partition, msg.offset)
                sent = [
                    self.slices.send_soon(
                        key=piece.key, value=piece.message(request, source),
                        partition=piece.partition,
                    )
                    for piece in plan(request, self.partitions, self.expander.chunk_size)
                ]
                await asyncio.gather(*sent)

    # -- the registry's partitions: apply changes; expand slices ------------------------------
    async def apply_updates(self, stream: faust.StreamT) -> None:
        async for events in _batches(stream):
            staged: dict[str, tuple[dict[str, Any], int, str]] = {}
            now = self.clock.now_ms()
            for event in events:
                eid, change = cast(str, event.key), cast(dict[str, Any], event.value)
                self._apply(eid, change, event.message.partition, staged, now)
            self._publish(staged)
            await self._settle([])

    async def expand_slices(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            if not (self.shards.wait_loaded(0) and self.activity.wait_loaded(0)):
                await self._wait_for_views()
            msg = event.message
            source = event.value.get("source") or (msg.topic, msg.partition, msg.offset)
            await self.expander.expand(event.key, msg.partition, event.value, tuple(source))

    # -- helpers ----------------------------------------------------------------------------
    async def sweep_pending(self) -> None:
        """Remove the local registry's enrollments that authenticated and never sent a
        TokenUpdate within the TTL (registry.expired_pending; docs/fanout-bounds.md): from the
        table, its changelog and the registry topic (tombstones); and the carriers whose window
        has passed."""
        now = self.clock.now_ms()
        expired = [eid for eid, record in list(self.registry.data.items())
                   if expired_pending(record, now, self.pending_ttl_ms)]
        for eid in expired:
            partition = registry_partition(eid, self.partitions)
            self.registry.delete(self.registry_out, eid, partition)
            self.bulk_out.produce(self.topics.registry, None, eid)
        # Carriers past their window mean nothing any more (coalesce.rides_on ignores them).
        stale = [eid for eid, held in list(self.carriers.data.items())
                 if held["expires_at"] <= now or eid in expired]
        for eid in stale:
            self.carriers.delete(self.registry_out, eid, registry_partition(eid, self.partitions))
        if expired or stale:
            await self._settle([])
        if expired:
            metrics.PENDING_EXPIRED.inc(len(expired))
            log.info("%d pending enrollment(s) expired from the registry", len(expired))

    async def _wait_for_views(self) -> None:
        """Until the policies and activity states at start are read (bounded, then go on)."""
        for view, what in ((self.shards, "push policies"), (self.activity, "activity states")):
            loaded = await self.app.loop.run_in_executor(
                None, view.wait_loaded, self.policy_wait_s)
            if not loaded:
                log.warning("%s not read in %.0fs; expanding with what is known", what,
                            self.policy_wait_s)

    def _apply(self, eid: str, change: dict[str, Any], partition: int,
               staged: dict[str, tuple[dict[str, Any], int, str]], now: int) -> None:
        """One change to the registry partition `partition`: the table at once, its changelog
        record and DeviceRecord staged in `staged` for `_publish`.

        Synchronous, like the batch around it up to `_publish`: nothing else runs between
        reading and writing the record, so the agents sharing the table (check-ins, forwarded
        updates, the sweep) cannot interleave on a key. A record changed several times in one
        batch (a TokenUpdate then command reports) is published once, as it ends; `_settle`
        awaits the produces before the batch's offsets can be committed. `now`: the fan-out's
        clock at the batch.
        """
        current = self.registry.data.get(eid)
        if "checkin" in change:
            event = change["checkin"]
            if event["occurred_at"] - now > self.future_tolerance_ms:  # _not_ahead's own test
                event = {**event, "occurred_at": self._not_ahead(
                    eid, event["occurred_at"], now, "checkin")}
            refusal = checkin_refusal(current, event)
            if refusal is not None:
                _count_refusal(refusal, eid, event, current)
                return
            if eid in self.carriers.data:  # the device answered its outstanding push
                self.carriers.delete(self.registry_out, eid, partition)
                metrics.CARRIERS_ANSWERED.inc()
            cause = event["message_type"].lower()
            new = apply_checkin(current, event, now)
        else:
            cause = "token_dead"
            dead = change["dead"]
            since = self._not_ahead(eid, dead["since"], now, "token_dead")
            new = mark_token_dead(current, dead["token_hex"], since, now)
        if new is None:
            return
        self.registry.data[eid] = new
        staged[eid] = (new, partition, cause)

    def _publish(self, staged: dict[str, tuple[dict[str, Any], int, str]]) -> None:
        """Queue the changelog record (`registry_out`: its acknowledgements tell the store how
        far it holds the changelog) and DeviceRecord (`bulk_out`) of each record `_apply`
        changed."""
        bulk, changelog, topic = self.bulk_out, self.registry_out, self.topics.registry
        encode, put, causes = self.serde.encode, self.registry.put, dict[str, int]()
        for eid, (record, partition, cause) in staged.items():
            # The changelog carries the registry topic's bytes (changelog.DeviceRecordCodec).
            encoded = encode("DeviceRecord", record, topic)
            put(changelog, eid, record, partition, encoded)
            bulk.produce(topic, encoded, eid)
            causes[cause] = causes.get(cause, 0) + 1
        for cause, count in causes.items():
            metrics.REGISTRY_UPDATES.labels(cause).inc(count)

    def _not_ahead(self, eid: str, at: int, now: int, source: str) -> int:
        """`at`, or the fan-out's now when `at` lies beyond the tolerance ahead of it
        (registry.clamp_future); counted and logged, as a clock that far off needs a look."""
        clamped = clamp_future(at, now, self.future_tolerance_ms)
        if clamped is None:
            return at
        metrics.CHECKINS_CLAMPED.labels(source).inc()
        log.warning("%s of enrollment %s stamped %d ms ahead of the fan-out's clock "
                    "(tolerance %d ms): applied at now", source, eid, at - now,
                    self.future_tolerance_ms)
        return clamped

    async def _settle(self, pending: list[Awaitable[Any]]) -> None:
        """Wait until everything a batch queued is acknowledged, before its events are acked.

        Flushes are serialised: one flush covers every record queued before it, and a record
        Kafka refused is produced again inside the flush that saw the refusal.
        """
        if pending:
            await asyncio.gather(*pending)
        async with self._flush_lock:
            refused_bulk, refused = await asyncio.gather(self.bulk_out.flush(),
                                                         self.registry_out.flush())
            refused += refused_bulk
            for (topic, partition), offset in self.registry_out.take_acked().items():
                table = self._changelogs.get(topic)
                if table is not None:
                    table.acknowledged(partition, offset)
        if refused:
            _log_refused(refused)

    async def _decode(
        self, value: bytes | None, where: tuple[str, int, int], key: bytes | None, schema: str,
        source: str, check: Callable[[Mapping[str, Any]], None],
    ) -> dict[str, Any] | None:
        """The record, or None after setting the original bytes aside on the DLQ.

        A record that decodes but breaks the limits (services/common/limits.py) is set aside the
        same way: another producer than the gateway may have written it, and an oversized id or
        token would otherwise reach the registry, a job and the APNs URL.
        """
        try:
            record = self.serde.decode_as(value, schema)
            check(record)
            return record
        except (DecodeError, InvalidInput) as exc:
            await self._set_aside(exc, value, where, key, schema, source)
            return None

    async def _set_aside(
        self, exc: DecodeError | InvalidInput, value: bytes | None, where: tuple[str, int, int],
        key: bytes | None, schema: str, source: str,
    ) -> None:
        """A poison record: counted, logged, its original bytes on the DLQ (acknowledged)."""
        reason = exc.reason if isinstance(exc, DecodeError) else f"invalid {schema}: {exc}"
        metrics.POISON.labels(source).inc()
        topic, partition, offset = where
        log.warning("poison record %s[%d]@%d: %s", topic, partition, offset, reason)
        self.dead_letters.write(
            source_topic=topic, partition=partition, offset=offset,
            key=key, value=value, reason=reason)
        await self.dead_letters.acknowledged()


def _count_refusal(
    refusal: CheckinRefusal, eid: str, event: Mapping[str, Any], current: Mapping[str, Any] | None
) -> None:
    """Count (and, for another tenant's, log) a check-in the registry does not apply."""
    if refusal is CheckinRefusal.FOREIGN_TENANT:
        assert current is not None  # foreign needs an owner
        metrics.FOREIGN_CHECKINS.inc()
        log.warning("check-in %s for enrollment %s refused: it names tenant %r, the "
                    "enrollment belongs to %r", event["message_type"], eid,
                    event.get("tenant"), current["tenant"])
    else:
        metrics.CHECKINS_REFUSED.labels(refusal.value).inc()


def _log_refused(refused: list[Refusal]) -> None:
    """Registry records Kafka can never accept: the change stays in the table (and is served)
    but is not durable; loud, counted, and not retried forever."""
    metrics.REFUSED.labels("registry").inc(len(refused))
    for refusal in refused:
        log.error("registry record %r refused permanently, kept in memory only: %s",
                  refusal.key, refusal.reason)


def _exits_without_commit(work: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """The agent (or batch handler), but Kafka refusing for good (DeliveryError after the
    bounded retries) or the DLQ limit (DlqLimitExceeded) end the process at once, with
    EXIT_UNSAFE_TO_COMMIT.

    faust acks the event an agent was handling when it raises (the stream generator's `finally`)
    and restarts the agent: its offset would be committed with its work undone (the check-in
    reader would go on to its next batch). Exiting before the event loop runs again leaves the
    offset uncommitted; the restarted worker reads the input again (its finished chunks are
    recognised by the progress table)."""

    @functools.wraps(work)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            await work(*args, **kwargs)
        except (DeliveryError, DlqLimitExceeded) as exc:
            log.critical("fan-out stops without committing its current input: %s", exc)
            os._exit(EXIT_UNSAFE_TO_COMMIT)

    return guarded


def _batches(stream: faust.StreamT) -> AsyncIterator[Sequence[faust.EventT]]:
    """Up to INGEST_BATCH events, or what came within INGEST_WITHIN_S; acked after the body."""
    return cast(faust.Stream, stream).take_events(INGEST_BATCH, within=INGEST_WITHIN_S)


def _credentials(kafka: KafkaSettings) -> faust.auth.Credentials | None:
    """faust's form of the security settings (librdkafka's names in KafkaSettings)."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = None
    if kafka.security_protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=kafka.ssl_ca_location)
        if kafka.ssl_certificate_location:
            context.load_cert_chain(
                kafka.ssl_certificate_location,
                kafka.ssl_key_location,
                kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
            )
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context)
