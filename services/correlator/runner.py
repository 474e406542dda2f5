"""The correlator's runner: Kafka in, the core's effects out, offsets stored only when safe.

The rules live in core.py; this module owns the clients and the order of writes that makes a
crash lose and double no verdict:
- Scale-out by enrollment: outcomes, check-ins and the activity topic are all keyed by
  enrollment id with the crc32 partitioner, so with equal partition counts an enrollment's
  records share one partition number p. The outcomes consumer group assigns partitions; the
  owner of outcomes partition p owns state partition p, check-ins partition p and activity
  partition p, and holds only those enrollments and pushes (each replica about 1/N of them).
- Assigning p (`_on_assign`): the core takes p (gated: nothing of p judged yet), state partition
  p is restored, then the contacts consumer is given check-ins partition p from the beginning
  and reads it to the end it had (the book's merge is order-independent, enrollments.py), then
  activity partition p (care's INACTIVE marks and re-arm times), and goes on following both
  live. Revoking (`_on_revoke`) stops following them and drops the pushes, and the whole book
  once nothing is owned (an eager rebalance revokes everything before assigning anew). A topic
  whose partition count differs from the outcomes topic's is read whole by every instance,
  filtered to the owned enrollments (correct, not scaled; a warning says so).
- What one instance cannot see: the stale-PushMagic diagnosis looks for another enrollment of the
  same UDID, which may live on a partition another instance owns; such a push is diagnosed
  DEVICE_UNREACHABLE (the verdict, UNANSWERED, is the same) and no self-healing push is
  scheduled. With one instance nothing changes (docs/fleet-care.md, "Scaling out").
- Pending pushes are consumed from `mdm.push.outcomes.v1` in a consumer group and mirrored in the
  compacted state topic (changelog.py), partition for partition; assigning outcomes partition p
  restores state partition p before anything of p is judged.
- Every verdict is produced into the partition of its SENT outcome. The correlator reads its own
  verdicts back ("echo"), and only then tombstones the state entry; the echo's offset is stored
  after the tombstone is acknowledged. After a crash, the restored entry is dropped when its
  echo is re-read, which happens before any verdict is allowed: the core keeps a partition's
  gate closed until the consumer has read up to the end the partition had when assigned.
- Prerequisites (alerts, re-push jobs, state entries, dead letters: `effects.is_prerequisite`)
  are flushed and checked first; verdicts and the tombstones of sent self-healing pushes follow;
  a batch's outcome offsets are stored after that flush. A crash can repeat an alert or a
  re-push job (same job id), never a verdict.

Delivery errors end the session, never store past them: a refused prerequisite fails the flush
before any offset of its batch is stored; a refused verdict or tombstone (whose outcome offset
may be stored already) is raised at the next batch, and its push, still in the state topic, is
judged again by the next session. A broker outage (Kafka unreachable, records unacknowledged
within `flush_timeout_s`, a topic not back yet, the DLQ topic included: its dead letters are
held by the writer, then dropped with the session, their sources uncommitted, so the next
session sets them aside again) is ridden out in the process: the session's consumers are closed,
the producer drained (every record it holds acknowledged or given up by librdkafka, so nothing
of the old session lands after the new one has read its partitions), the core dropped, and the
start is tried again after a back-off doubling from 1 s to `retry_backoff_max_s`; /readyz says
why meanwhile. Only a record Kafka can never accept (or the DLQ's budget) stops the process.
The check-ins' replay and the state's restore stop at SIGTERM; `close()` is bounded by
`close_timeout_s`.

Timers are checked in the loop (pending.py's wheel); nothing sleeps in the poll loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from services.common.admin import admin_client, create_topics
from services.common.catalogue import ACTIVITY, Topics
from services.common.clock import Clock
from services.common.errors import DecodeError, TopicReadError
from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.logs import client_logger
from services.common.kafka.producer import (
    DeliveryError,
    PermanentDeliveryError,
    ReliableProducer,
    delivery_error,
    is_permanent,
)
from services.common.kafka.reader import read_to_end
from services.common.limits import InvalidInput, check_checkin_event
from services.common.ops_server import Heartbeat
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.correlator import changelog
from services.correlator.core import CorrelatorCore
from services.correlator.effects import (
    ActivityWrite,
    Alert,
    DeadLetter,
    Effect,
    RepushCause,
    RepushJob,
    Source,
    StateWrite,
    Verdict,
    is_prerequisite,
)
from services.correlator.inputs import check_outcome
from services.correlator.metrics import CorrelatorMetrics
from services.correlator.settings import CorrelatorSettings

log = logging.getLogger(__name__)

SERVICE = "correlator"
#: First pause before starting again after a Kafka outage (doubling up to the setting's bound).
RETRY_FIRST_S = 1.0
#: Slices of the waits of an outage, so a stop is seen and /livez stays fresh.
WAIT_SLICE_S = 1.0
#: Both consumers' read-ahead, capped: librdkafka's default queues up to 64 MiB per consumer,
#: which a replay of the check-ins fills and the allocator keeps. At 200,000 pending pushes fed
#: from Kafka: 410 MiB and 821 B of RSS per pending push by default, 307 MiB and 445 B with 4 MiB,
#: as fast (tests/bench/bench_correlator_rss.py); the operator's consumer_overrides still win.
CONSUMER_DEFAULTS: dict[str, Any] = {"queued.max.messages.kbytes": 4096}


class Stopped(Exception):
    """SIGTERM/SIGINT (or `stop()`) arrived during the start-up replay or a restore."""


class CorrelatorRunner:
    def __init__(
        self,
        settings: CorrelatorSettings,
        kafka: KafkaSettings,
        serde: AvroSerde,
        clock: Clock,
        metrics: CorrelatorMetrics | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.s = settings
        self.kafka = kafka
        self.serde = serde
        self.clock = clock
        self.metrics = metrics or CorrelatorMetrics()
        #: Stamped by every loop turn, Kafka wait and replayed record (/livez).
        self.heartbeat = heartbeat or Heartbeat(30.0)
        #: Outcomes partitions restored and held (/readyz: written by the rebalance callbacks).
        self.held: frozenset[int] = frozenset()
        self.topics = Topics(kafka.topic_prefix)
        self.state_topic = f"{kafka.topic_prefix}{changelog.STATE.name}"
        self.core = CorrelatorCore(settings)
        self.producer = ReliableProducer(kafka, name=SERVICE)
        self.dlq = DeadLetterWriter(self.producer, self.topics.dlq, service=SERVICE,
                                    limit=DlqLimit.from_settings(kafka))
        self.outcomes: Consumer | None = None
        self.contacts: Consumer | None = None
        self.running = True
        #: Whether the last close() finished within `close_timeout_s`.
        self.closed_in_time = True
        self._flush_needed = False
        #: Verdicts and after-job tombstones of the batch: written after its prerequisites.
        self._after: list[Effect] = []
        #: check-ins partition -> offset past the last dead-lettered one, to store after a flush.
        self._checkins_dead: dict[int, int] = {}
        #: Refusals of records produced after the prerequisites (checked every batch).
        self._lost: list[tuple[KafkaError, str]] = []
        #: Why Kafka is unusable while a new session is awaited (/readyz), else None.
        self.outage: str | None = None
        #: Set while a session is torn down: the revoke callback then only forgets.
        self._ending = False
        #: (topic, partition) of the check-ins and activity the contacts consumer follows.
        self._following: set[tuple[str, int]] = set()
        #: Partition counts of the check-ins and activity topics (read at start).
        self._counts: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        """Start, loop until `stop()` (SIGTERM/SIGINT from __main__), close within the bound;
        a Kafka outage ends the session and a new one starts after a back-off."""
        backoff = RETRY_FIRST_S
        try:
            while self.running:
                try:
                    self.start()
                    while self.running:
                        self.step()
                        if self.held and self.outage is not None:
                            log.info("Kafka is back: outcomes partitions held again")
                            self.outage, backoff = None, RETRY_FIRST_S
                except Stopped:
                    raise
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    self.outage = f"{type(exc).__name__}: {exc}"
                    log.warning("Kafka unavailable (%s); this session ends and a new one starts "
                                "in %.0f s (not ready meanwhile)", self.outage, backoff)
                    self._end_session()
                    self._wait(backoff)
                    backoff = min(2 * backoff, max(RETRY_FIRST_S, self.s.retry_backoff_max_s))
        except Stopped as stopped:
            log.info("%s", stopped)
        finally:
            self.close()

    def start(self) -> None:
        """Create the state topic, join the outcomes group; each assignment reads the rest."""
        self._ensure_state_topic()
        self.contacts = Consumer(
            self.kafka.consumer_config(f"{self.s.group_id}.contacts", **CONSUMER_DEFAULTS),
            logger=client_logger(f"{SERVICE}.checkins"))
        self._following = set()
        self.outcomes = Consumer(self.kafka.consumer_config(self.s.group_id, **CONSUMER_DEFAULTS),
                                 logger=client_logger(f"{SERVICE}.outcomes"))
        self.outcomes.subscribe([self.topics.outcomes], on_assign=self._on_assign,
                                on_revoke=self._on_revoke)

    def not_ready(self) -> str | None:
        """/readyz: None once the check-ins are replayed and outcomes partitions restored and
        held, else why not (read from the ops server's thread: plain attribute reads)."""
        if not self.running:
            return "stopping"
        if self.outage is not None:
            return f"Kafka unavailable ({self.outage}): starting again"
        if self.outcomes is None:
            return "starting"
        if not self.held:
            return "no outcomes partitions assigned yet"
        return None

    def stop(self, *_: Any) -> None:
        self.running = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def close(self) -> None:
        """Leave the group, flush what is queued, release the clients: all within
        `close_timeout_s` (a broker that does not answer must not outlast the pod's grace)."""
        worker = threading.Thread(target=self._close_clients, name="correlator-close",
                                  daemon=True)
        worker.start()
        worker.join(self.s.close_timeout_s)
        self.closed_in_time = not worker.is_alive()
        if not self.closed_in_time:
            log.error("close did not finish within %.1f s; leaving without it (offsets stored "
                      "so far are safe, the state topic covers the rest)", self.s.close_timeout_s)

    def _close_clients(self) -> None:
        self.running = False
        for consumer in (self.outcomes, self.contacts):
            if consumer is not None:
                try:
                    consumer.close()  # the outcomes group's revoke flushes the producer
                except Exception:  # closing: log it, go on releasing the rest
                    log.exception("closing a consumer failed")
        try:
            self.producer.close(self.s.close_timeout_s)
        except DeliveryError as exc:
            log.error("records left unacknowledged at close: %s", exc)
        if self._lost:
            log.error("records refused by Kafka at close: %s", "; ".join(
                f"{where_to}: {err.str()}" for err, where_to in self._lost[:5]))

    def _end_session(self) -> None:
        """After an outage: close the consumers (bounded), drain the producer, forget the core's
        state; the next `start()` rebuilds it all from Kafka, as a restarted process would."""
        self._ending = True
        try:
            for consumer in (self.outcomes, self.contacts):
                if consumer is not None:
                    self._bounded(consumer.close, "closing a consumer")
        finally:
            self._ending = False
        self.outcomes = self.contacts = None
        self.held = frozenset()
        self._drain()
        self.dlq.forget()  # held dead letters: their records are read and set aside again
        self._after.clear()
        self._lost.clear()
        self._checkins_dead.clear()
        self._flush_needed = False
        self.core = CorrelatorCore(self.s)
        self.metrics.restart_totals()

    def _bounded(self, call: Any, what: str) -> None:
        """`call()` in a thread, given up on after `close_timeout_s` (a consumer's close can
        wait on a broker that does not answer); its errors are logged."""
        def guarded() -> None:
            try:
                call()
            except Exception:  # tearing down after an outage: log it, go on
                log.exception("%s failed", what)
        worker = threading.Thread(target=guarded, name="correlator-teardown", daemon=True)
        worker.start()
        worker.join(self.s.close_timeout_s)
        if worker.is_alive():
            log.warning("%s did not finish within %.1f s; left behind", what,
                        self.s.close_timeout_s)

    def _drain(self) -> None:
        """Wait until the producer holds nothing: each record acknowledged, or given up by
        librdkafka after its message timeout. A record Kafka can never accept stops the process;
        the others are written again by the next session, which re-reads their inputs."""
        while True:
            self.heartbeat.beat()
            if not self.running:
                raise Stopped("stopped while Kafka was unavailable")
            try:
                self.producer.flush(WAIT_SLICE_S)
                return
            except PermanentDeliveryError:
                raise
            except DeliveryError as exc:
                if len(self.producer.client) == 0:
                    log.warning("records given up during the outage are written again by the "
                                "next session: %s", exc)
                    return

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.heartbeat.beat()
            if not self.running:
                raise Stopped("stopped while Kafka was unavailable")
            time.sleep(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())))

    def _ensure_state_topic(self) -> None:
        """Wait for Kafka (in short calls, so a stop is seen), then create the state topic with
        as many partitions as the outcomes topic."""
        admin = admin_client(self.kafka)
        log.info("waiting for Kafka at %s", self.kafka.bootstrap_servers)
        deadline = time.monotonic() + self.s.kafka_wait_s
        while True:
            self.heartbeat.beat()
            if not self.running:
                raise Stopped("stopped while waiting for Kafka")
            try:
                meta = admin.list_topics(self.topics.outcomes, timeout=1.0)
                break
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise TopicReadError(
                        f"Kafka at {self.kafka.bootstrap_servers} did not answer within "
                        f"{self.s.kafka_wait_s:.0f}s: {exc.args[0]}") from exc
        parts = meta.topics[self.topics.outcomes].partitions
        if not parts:  # not created yet, or a restarted broker still loading its logs
            raise TopicReadError(f"topic {self.topics.outcomes} does not exist (yet)")
        self.core.partition_count = len(parts)
        create_topics(self.kafka, [changelog.STATE], partitions_override=len(parts))
        create_topics(self.kafka, [ACTIVITY], partitions_override=len(parts))
        self._counts = {}
        for topic in (self.topics.checkins, self.topics.activity):
            count = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
            if not count:
                raise TopicReadError(f"topic {topic} does not exist (yet)")
            self._counts[topic] = count
            if count != len(parts):
                log.warning("%s has %d partitions, %s %d: every instance reads all of it (give "
                            "them equal counts to scale out by enrollment)", topic, count,
                            self.topics.outcomes, len(parts))

    def _until_stopped(self, messages: Iterator[Message], what: str) -> Iterator[Message]:
        """`messages`, until a stop is asked for (then the read is closed and Stopped raised)."""
        try:
            for msg in messages:
                self.heartbeat.beat()
                if not self.running:
                    raise Stopped(f"stopped during {what}")
                yield msg
        finally:
            if isinstance(messages, Generator):
                messages.close()  # the reader's consumer, at once

    def _contact_partitions(self, topic: str, owned: list[int]) -> list[int]:
        """The partitions of `topic` holding the records of the owned outcomes partitions:
        the same numbers when co-partitioned, else all of them."""
        count = self._counts[topic]
        return owned if count == self.core.partition_count else list(range(count))

    def _replay_contacts(self, owned: list[int]) -> None:
        """Read the check-ins, then the activity records, of the newly owned partitions up to
        their current end before judging any of their pushes; the contacts consumer reads them
        and then goes on following them live."""
        checkins = self.topics.checkins
        parts = [p for p in self._contact_partitions(checkins, owned)
                 if (checkins, p) not in self._following]
        if parts:
            committed = self._contacts().committed([TopicPartition(checkins, p) for p in parts],
                                                   timeout=30)
            # This group's offsets only remember which poison check-ins were dead-lettered.
            self.core.mark_dead_lettered({tp.partition: tp.offset for tp in committed
                                          if tp.offset >= 0})
            log.info("replaying check-ins of %s partitions %s", checkins, parts)
            self._replay(checkins, parts, "the check-ins' replay")
            self._write_batch()
        # After the check-ins: a contact replayed must not count as an answer to a re-arm.
        activity = self.topics.activity
        parts = [p for p in self._contact_partitions(activity, owned)
                 if (activity, p) not in self._following]
        if parts:
            self._replay(activity, parts, "the activity's replay")
            self._write_batch()
        self._store_checkin_offsets()
        log.info("replayed check-ins and activity of partitions %s: %d enrollments held, %d of "
                 "them inactive", owned, len(self.core.book.ids), self.core.care.inactive)

    def _replay(self, topic: str, parts: list[int], what: str) -> None:
        """Follow `parts` of `topic` from the beginning with the contacts consumer and read up
        to the end they had when called. The consumer that will follow them live reads them,
        so it is fetching already when their pushes may be judged (a consumer first assigned
        then would lag its first fetch behind the race window)."""
        consumer = self._contacts()
        ends: dict[int, int] = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._following |= {(topic, p) for p in parts}
        deadline = time.monotonic() + self.s.replay_timeout_s
        while ends:
            self.heartbeat.beat()
            if not self.running:
                raise Stopped(f"stopped during {what}")
            if time.monotonic() > deadline:
                raise TopicReadError(f"{what} did not finish within {self.s.replay_timeout_s:.0f}s")
            for msg in consumer.consume(self.s.consume_batch, timeout=0.2):
                if msg.error():
                    continue
                self._on_contact(msg, self.clock.now_ms())  # a replay takes a while
                p, offset = where(msg)
                if msg.topic() == topic and offset + 1 >= ends.get(p, offset + 2):
                    del ends[p]

    def _contacts(self) -> Consumer:
        assert self.contacts is not None, "the contacts consumer exists from start()"
        return self.contacts

    # -- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = [tp.partition for tp in partitions]
        self.core.take(owned)
        committed = consumer.committed(partitions, timeout=30)
        self._restore(owned)
        self._replay_contacts(owned)
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            start = tp.offset if tp.offset >= 0 else low
            self._apply(self.core.assign(tp.partition, None if start >= high else high))
        self.held |= {tp.partition for tp in partitions}
        log.info("assigned outcomes partitions %s", [tp.partition for tp in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.held -= {tp.partition for tp in partitions}
        if not self._ending:  # a session ending after an outage drains the producer itself
            self.producer.flush(self.s.flush_timeout_s)
            self._raise_lost()
        self.core.revoke(tp.partition for tp in partitions)
        self._unfollow()

    def _unfollow(self) -> None:
        """Stop following the check-in and activity partitions of enrollments no longer owned
        (all of them when nothing is owned)."""
        if self.contacts is None or self._ending:
            return
        revoked = [(topic, p) for topic, p in self._following
                   if not self.core.owned or (self._counts[topic] == self.core.partition_count
                                              and p not in self.core.owned)]
        if revoked:
            self.contacts.incremental_unassign([TopicPartition(t, p) for t, p in revoked])
            self._following -= set(revoked)

    def _restore(self, partitions: Iterable[int]) -> None:
        """Replay the state partitions in log order: later entries replace, tombstones delete.
        An unreadable entry is logged and skipped: losing one pending push beats not starting."""
        wanted = list(partitions)
        log.info("restoring state partitions %s", wanted)
        state = read_to_end(self.kafka, self.state_topic, partitions=wanted,
                            timeout_s=self.s.replay_timeout_s, name=f"{SERVICE}.restore")
        for msg in self._until_stopped(state, "the state's restore"):
            p, offset = where(msg)
            key = (msg.key() or b"").decode(errors="replace")
            value = msg.value()
            try:
                entry = changelog.decode(value) if value else None
            except changelog.CorruptEntry as exc:
                log.error("skipping state entry %s@%d/%d: %s", self.state_topic, p, offset, exc)
                continue
            self.core.restore(p, key, entry)
        log.info("state partitions %s restored: %d live entries in all", wanted,
                 len(self.core.store))

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        """One iteration: read both inputs, fire due timers, write, store offsets."""
        assert self.outcomes is not None and self.contacts is not None
        self.heartbeat.beat()
        out_msgs = self.outcomes.consume(self.s.consume_batch, timeout=0.05)
        in_msgs = self.contacts.consume(self.s.consume_batch, timeout=0)
        now = self.clock.now_ms()
        for msg in in_msgs:
            if not msg.error():
                self._on_contact(msg, now)
        for msg in out_msgs:
            if not msg.error():
                self._on_outcome(msg, now)
        if len(in_msgs) < self.s.consume_batch:
            self._apply(self.core.tick(self.clock.now_ms()))
        self._write_batch()
        latest: dict[int, int] = {}
        for msg in out_msgs:
            if not msg.error():
                p, offset = where(msg)
                latest[p] = max(latest.get(p, -1), offset)
        if latest:
            self.outcomes.store_offsets(offsets=[
                TopicPartition(self.topics.outcomes, p, o + 1) for p, o in latest.items()])
        self._store_checkin_offsets()
        self._update_gauges()

    def _update_gauges(self) -> None:
        """The core's own counts, exported as they stand after the batch."""
        m, core = self.metrics, self.core
        m.pending.set(len(core.store))
        m.enrollments.set(len(core.book.ids))
        m.inactive.set(core.care.inactive)
        m.catch_up(m.foreign_checkins, core.foreign_checkins)
        m.catch_up(m.refused_enrollments, core.refused_enrollments)
        m.catch_up(m.rearm_answered, core.care.answered_after_rearm)

    def _on_contact(self, msg: Message, now: int) -> None:
        """A record of the contacts consumer: a check-in or an activity record."""
        if msg.topic() == self.topics.activity:
            self._on_activity(msg)
        else:
            self._on_checkin(msg, now)

    def _on_checkin(self, msg: Message, now: int) -> None:
        self.dlq.consumed()
        try:
            event = self.serde.decode_as(msg.value(), "CheckinEvent")
            check_checkin_event(event)
        except (DecodeError, InvalidInput) as exc:
            p, offset = where(msg)
            self._apply(self.core.poison_checkin(p, offset, poison_reason("CheckinEvent", exc)),
                        msg)
            return
        refused = self.core.foreign_checkins
        self._apply(self.core.checkin(event, now))
        if self.core.foreign_checkins != refused:
            log.warning("check-in %s for enrollment %s refused: tenant %r is not the "
                        "enrollment's", event["message_type"], event["enrollment_id"],
                        event.get("tenant"))

    def _on_activity(self, msg: Message) -> None:
        """An EnrollmentActivity record; an unreadable one is logged and skipped (it only
        costs a repeated INACTIVE/ACTIVE write or re-arm, never a verdict)."""
        value = msg.value()
        if value is None:
            return
        try:
            record = self.serde.decode_as(value, "EnrollmentActivity")
        except DecodeError as exc:
            p, offset = where(msg)
            log.error("skipping activity record %s@%d/%d: %s", msg.topic(), p, offset,
                      exc.reason)
            return
        self.core.activity(record)

    def _on_outcome(self, msg: Message, now: int) -> None:
        self.dlq.consumed()
        p, offset = where(msg)
        try:
            record = self.serde.decode_as(msg.value(), "PushOutcome")
            check_outcome(record)
        except (DecodeError, InvalidInput) as exc:
            self._apply(self.core.poison_outcome(p, offset, poison_reason("PushOutcome", exc)),
                        msg)
            return
        self._apply(self.core.outcome(record, p, offset, now))

    # -- writing the core's effects ----------------------------------------------------------
    def _apply(self, effects: list[Effect], source: Message | None = None) -> None:
        """Queue prerequisites now, keep the rest for after the batch's flush; count them."""
        for effect in effects:
            self._count(effect)
            if not is_prerequisite(effect):
                self._after.append(effect)
                continue
            self._flush_needed = True
            if isinstance(effect, DeadLetter):
                assert source is not None, "a dead letter comes with its source record"
                self._dead_letter(effect, source)
            else:
                self._produce(effect)

    def _write_batch(self) -> None:
        """Flush and check the prerequisites, then queue verdicts and after-job tombstones."""
        if self._flush_needed:
            self.producer.flush(self.s.flush_timeout_s)  # raises: no offset of this batch stored
            self.dlq.check()
            if self.dlq.held:  # the DLQ topic does not exist: an outage of this session
                raise DeliveryError(
                    f"{self.dlq.held} dead letter(s) held: the dead-letter topic {self.dlq.topic} "
                    f"does not exist ({self.dlq.held_because}); the next session reads their "
                    f"records again")
            self._flush_needed = False
        for effect in self._after:
            self._produce(effect, self._on_after_delivery)
        self._after.clear()
        self.producer.poll(0)
        self._raise_lost()

    def _produce(self, effect: Effect, on_delivery: Any = None) -> None:
        topic, key, value, partition = self._record(effect)
        self.producer.produce(topic, value, key, partition=partition, on_delivery=on_delivery)

    def _record(self, effect: Effect) -> tuple[str, bytes, bytes | None, int | None]:
        """(topic, key, value, partition) of an effect's record."""
        match effect:
            case Verdict(partition=p, record=rec):
                return (self.topics.outcomes, rec["enrollment_id"].encode(),
                        self.serde.encode("PushOutcome", rec, self.topics.outcomes), p)
            case Alert(record=rec):
                return (self.topics.alerts, rec["enrollment_id"].encode(),
                        self.serde.encode("UnansweredPush", rec, self.topics.alerts), None)
            case RepushJob(record=rec):
                # Keyed by the push topic: the shard is not known here, so a certificate with
                # `shards > 1` gets its re-pushes on the unsharded key.
                jobs = (self.topics.jobs_bulk if rec["lane"] == "BULK"
                        else self.topics.jobs_priority)
                return (jobs, (rec["topic"] or "").encode(),
                        self.serde.encode("PushJob", rec, jobs), None)
            case ActivityWrite(record=rec):
                return (self.topics.activity, rec["enrollment_id"].encode(),
                        self.serde.encode("EnrollmentActivity", rec, self.topics.activity),
                        None)
            case StateWrite(partition=p, job_id=job, entry=entry):
                return (self.state_topic, job.encode(),
                        None if entry is None else changelog.encode(entry), p)
        raise TypeError(f"no record for {effect!r}")

    def _dead_letter(self, effect: DeadLetter, msg: Message) -> None:
        log.warning("poison record %s@%d/%d: %s", msg.topic(), effect.partition, effect.offset,
                    effect.reason)
        self.dlq.write(source_topic=msg.topic() or "", partition=effect.partition,
                       offset=effect.offset, key=msg.key(), value=msg.value(),
                       reason=effect.reason)
        if effect.source is Source.CHECKINS:
            self._checkins_dead[effect.partition] = effect.offset + 1

    def _store_checkin_offsets(self) -> None:
        """After the flush that acknowledged their dead letters (this group's only offsets)."""
        if self._checkins_dead and self.contacts is not None:
            self.contacts.store_offsets(offsets=[
                TopicPartition(self.topics.checkins, p, o) for p, o in self._checkins_dead.items()])
            self._checkins_dead.clear()

    def _on_after_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._lost.append((err, f"{msg.topic()}[{msg.partition()}]"))

    def _raise_lost(self) -> None:
        if self._lost:
            err, where_to = next(((e, w) for e, w in self._lost if is_permanent(e)),
                                 self._lost[0])
            error = delivery_error(err, where_to)
            raise type(error)(
                f"{error}: {len(self._lost)} verdict/tombstone record(s) refused; their pushes "
                f"are still in {self.state_topic} and are judged again by the next session")

    def _count(self, effect: Effect) -> None:
        m = self.metrics
        match effect:
            case Verdict(record=rec):
                answered = rec["state"] == "ANSWERED"
                m.verdicts.labels(rec["state"], "" if answered else rec["reason"]).inc()
                if answered:
                    m.answer_latency.observe(rec["latency_ms"] / 1000)
            case Alert(record=rec, at_deadline=at_deadline):
                m.alerts.labels(rec["diagnosis"].lower()).inc()
                if at_deadline:
                    m.lateness.observe(max(0, rec["flagged_at"] - rec["deadline_at"]) / 1000)
            case RepushJob(cause=cause):
                m.repushes.labels(cause.value).inc()
                if cause is RepushCause.REARM:
                    m.rearms.inc()
            case DeadLetter(source=source):
                m.dlq.labels(source.value).inc()


def is_outage(exc: BaseException) -> bool:
    """Whether a new session can outlive `exc`: Kafka unreachable or slow, records it did not
    acknowledge in time, a topic not (yet) there. Not: a record it can never accept, a fatal
    client error, the DLQ's budget, or a bug."""
    if isinstance(exc, PermanentDeliveryError):
        return False
    if isinstance(exc, (DeliveryError, TopicReadError)):
        return True
    if isinstance(exc, KafkaException):
        err = exc.args[0] if exc.args else None
        return not (isinstance(err, KafkaError) and err.fatal())
    return False


def poison_reason(schema: str, exc: DecodeError | InvalidInput) -> str:
    """Why a consumed record is set aside: it does not decode, or breaks the limits (the
    fan-out's words for the same)."""
    if isinstance(exc, DecodeError):
        return exc.reason
    return f"invalid {schema}: {exc}"


def where(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message, which always has both."""
    p, offset = msg.partition(), msg.offset()
    assert p is not None and offset is not None
    return p, offset
