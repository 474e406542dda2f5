"""The sender's main loop: Kafka jobs in, APNs pushes out, one outcome per attempt back to Kafka.

One thread drives everything without blocking: `consume` a batch (priority, bulk and the retry
tiers from one consumer, range-assigned, so one sender owns partition p of all of them — the
key's whole traffic, which makes its local buckets the farm-wide throttle), queue the jobs per
lane and key, send what the buckets and the in-flight bound allow (priority first), collect APNs
answers, produce outcomes / retries / DLQ copies without flushing, and commit each partition's
offset once every record produced for its done prefix is acknowledged (with the jobs finished
past it, so that a crash repeats only what was in flight: commit_marks.py).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from json.encoder import encode_basestring_ascii
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka import TOKEN_DEAD_HEADER, dead_letter_headers
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings
from services.sender.apns.breaker import BreakerRegistry
from services.sender.apns.classify import Classification, Verdict, classify
from services.sender.apns.pool import (
    BULK,
    PRIORITY,
    CertificateStore,
    ClientPool,
    UnknownCertificateError,
)
from services.sender.apns.types import ApnsRequest, ApnsResponse
from services.sender.lanes import LANES, LaneBuffers, Pending
from services.sender.metrics import SenderMetrics
from services.sender.offsets import Entry, OffsetTracker
from services.sender.policy import LiveSenders, PolicyBook, PolicyFeed
from services.sender.scheduler import ATTEMPT_HEADER, RetryScheduler
from services.sender.settings import SenderSettings
from services.sender.throttle import Throttle

log = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]

WRONG_TOPIC = "WrongTopic"
#: Headers of a FAILED 410 outcome: the fan-out reads only those (fanout/dead_tokens.py).
TOKEN_DEAD: Headers = [(TOKEN_DEAD_HEADER, b"410")]
BREAKER_OPEN = "BreakerOpen"
#: Longest the loop blocks in one call while APNs requests are in flight / while idle.
BUSY_WAIT_S = 0.005
IDLE_WAIT_S = 0.05
#: The loop commits each partition's position (offset and the jobs finished past it, see
#: commit_marks.py) as soon as it changed and the previous commit was answered, at most this
#: often. A SIGKILL repeats what was in flight plus what finished since the last commit: a wave
#: of answers acknowledged just before the kill (bench_sender_crash kills right then) is repeated
#: whole if its commit waits for a timer, so commits follow acknowledgements, not a clock.
COMMIT_INTERVAL_S = 0.005
#: An async commit not answered in this long no longer holds the next one back.
COMMIT_ANSWER_S = 1.0


class InFlight:
    """A job on the wire: what to finish, and the policy it was sent under."""

    __slots__ = ("item", "max_attempts")

    def __init__(self, item: Pending, max_attempts: int) -> None:
        self.item = item
        self.max_attempts = max_attempts


class Sender:
    """One sender process (or one in-thread instance in tests); `run()` until `stop()`."""

    def __init__(
        self,
        settings: SenderSettings,
        kafka: KafkaSettings,
        *,
        clock: Clock | None = None,
        serde: AvroSerde | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.topics = Topics(kafka.topic_prefix)
        self.serde = serde or serde_for(kafka)
        self.clock = clock or Clock.from_settings()
        self.scheduler = RetryScheduler(self.topics, settings.retry_delays_ms)
        self.book = PolicyBook(
            PushPolicy(
                priority_per_minute=settings.default_priority_per_minute,
                bulk_per_minute=settings.default_bulk_per_minute,
                max_attempts=settings.default_max_attempts,
            )
        )
        self.throttle = Throttle()
        self.breakers = BreakerRegistry(settings.breaker_s)
        self.pool = ClientPool(
            CertificateStore(settings.cert_dir),
            settings.endpoint(),
            transport=settings.transport,
            ca_path=settings.ca_path,
            max_concurrent_streams=settings.max_concurrent_streams,
            request_timeout_s=settings.request_timeout_s,
            idle_timeout_s=settings.idle_close_s,
        )
        self.offsets = OffsetTracker()
        self.buffers = LaneBuffers(settings.buffer_per_partition)
        self.metrics = SenderMetrics()
        self.producer = Producer(kafka.producer_config())
        # Prefetch little: back-pressure pauses partitions and librdkafka drops their prefetch,
        # so a large prefetch would only be fetched twice. The threshold applies to the one
        # queue all partitions share: above it, no partition is fetched, the priority one
        # neither ("Fetch backoff: Queue full"). A fetch may bring a whole producer batch
        # (~3,500 bulk jobs measured) at once, so the loop takes everything queued in one
        # `consume` (consume_batch) and a priority record waits one fetch, not a backlog.
        self.consumer = Consumer(
            kafka.consumer_config(
                settings.group_id,
                **{
                    "partition.assignment.strategy": "range",
                    "queued.min.messages": 1000,
                    "queued.max.messages.kbytes": 2048,
                    # librdkafka waits this long to fetch again once the prefetch queue is full
                    # (1 s by default): at 10,000 pushes/s that starves the loop.
                    "fetch.queue.backoff.ms": 5,
                    # One fetch brings at most this much per partition: a priority record
                    # arriving behind a bulk fetch waits for that fetch to be routed, no more.
                    "max.partition.fetch.bytes": 65536,
                    # A resumed retry partition waits for the fetch in progress: keep it short.
                    "fetch.wait.max.ms": 25,
                    # The loop commits itself, with the finished offsets as metadata:
                    # librdkafka's auto-commit skips a partition whose offset did not move.
                    "enable.auto.commit": False,
                    "client.id": f"{kafka.client_id}-sender-{settings.instance_id}",
                    "on_commit": self._committed,
                },
            )
        )
        self._in_flight: dict[str, InFlight] = {}
        self._next_id = 0
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        self._timer_s: float | None = None
        self._next_commit = 0.0
        #: When the async commit still unanswered was sent (None: none is).
        self._commit_sent: float | None = None
        self._feed: PolicyFeed | None = None
        self._live: LiveSenders | None = None
        #: True once the group has assigned partitions (tests wait for it).
        self.assigned = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to drain and return (safe from signal handlers and other threads)."""
        self._stop.set()

    def run(self) -> None:
        """Consume and send until `stop()`; then drain in-flight work, commit, close."""
        self.metrics.serve(self.settings.metrics_port)
        self._feed = PolicyFeed(self.kafka, self.topics.config, self.serde, self.book)
        self._feed.load()
        self._live = LiveSenders(
            self.kafka, self.settings.group_id, self.settings.members_refresh_s
        )
        subscribed = [self.topics.jobs_priority, self.topics.jobs_bulk, *self.scheduler.topics]
        self.consumer.subscribe(subscribed, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("sender %s consuming %s", self.settings.instance_id, ", ".join(subscribed))
        next_housekeeping = 0.0
        try:
            while not self._stop.is_set() and self._fatal is None:
                self._step()
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + 0.1
                    self._housekeeping()
        finally:
            self._shutdown()
        if self._fatal is not None:
            raise KafkaException(self._fatal)

    def _step(self) -> None:
        for topic, partition in self.scheduler.due(_real_ms()):
            tp = (topic, partition)
            self.buffers.paused.discard(tp)
            self.consumer.resume([TopicPartition(topic, partition)])
        busy = bool(self._in_flight)
        timer = self._wait_bound()
        consume_wait = 0.0 if busy else min(IDLE_WAIT_S, timer)
        self._route(self.consumer.consume(self.settings.consume_batch, consume_wait))
        self._dispatch()
        answers = self.pool.poll(min(BUSY_WAIT_S, timer) if self._in_flight else 0.0)
        if answers:
            self._complete(answers)
        self.producer.poll(0)
        now = time.monotonic()
        answered = self._commit_sent is None or now - self._commit_sent > COMMIT_ANSWER_S
        if answered and now >= self._next_commit:
            self._next_commit = now + COMMIT_INTERVAL_S
            if self._commit(asynchronous=True):
                self._commit_sent = now

    def _wait_bound(self) -> float:
        """How long the loop may block: until the next throttle or retry-tier due time."""
        bound = IDLE_WAIT_S if self._timer_s is None else self._timer_s
        held = self.scheduler.next_wait_s(_real_ms())
        return bound if held is None else min(bound, held)

    def _housekeeping(self) -> None:
        if self._feed is not None:
            self._feed.poll(0)
        if self._live is not None:
            self._live.poll()
        m = self.metrics
        m.in_flight.set(len(self._in_flight))
        m.buffered.set(self.buffers.size)
        m.breaker_open.set(len(self.breakers.open_topics()))

    def _shutdown(self) -> None:
        self._drain(self.settings.shutdown_timeout_s)
        for answer in self.pool.close():  # only if the drain timed out: retried later
            self._in_flight.pop(answer.correlation_id, None)
        try:
            self._commit(asynchronous=False)
            self.consumer.close()
        finally:
            if self._feed is not None:
                self._feed.close()
        log.info("sender %s stopped", self.settings.instance_id)

    def _drain(self, timeout_s: float) -> None:
        """Finish what is on the wire and get its records acknowledged (bounded)."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            answers = self.pool.poll(0.05)
            if answers:
                self._complete(answers)
            self.producer.poll(0)
        self.producer.flush(max(0.1, deadline - time.monotonic()))
        self.producer.poll(0)

    # -- rebalance --------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Read the jobs a previous owner finished past its commits, so they are not re-sent."""
        log.info("assigned %d partitions", len(partitions))
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:  # at least once still holds: they are sent again
            log.warning("could not read the committed positions: %s", exc)
            committed = []
        recovered = 0
        for tp in committed:
            if tp.metadata and tp.offset >= 0:
                part = self.offsets.partition(tp.topic, tp.partition)
                recovered += part.recover(tp.offset, tp.metadata)
        if recovered:
            log.info("%d jobs past the committed offsets were finished before: not re-sent",
                     recovered)
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish in-flight work so its offsets are committed, then forget the partitions."""
        self._drain(5.0)
        self._commit(asynchronous=False)
        for tp in partitions:
            source = (tp.topic, tp.partition)
            self.offsets.revoke(*source)
            self.buffers.drop_source(source)
            self.scheduler.drop(*source)
        self.assigned.clear()

    # -- Kafka in ---------------------------------------------------------------------------------
    def _route(self, messages: list[Message]) -> None:
        if not messages:
            return
        blocked: set[tuple[str, int]] = set()
        now_ms = _real_ms()
        scheduler, buffers, serde = self.scheduler, self.buffers, self.serde
        for msg in messages:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            source = (topic, partition)
            if source in blocked:
                continue
            if scheduler.is_retry_topic(topic):
                due_ms = scheduler.not_before_ms(msg)
                if due_ms > now_ms:
                    tp = TopicPartition(topic, partition, offset)
                    self.consumer.pause([tp])
                    self.consumer.seek(tp)
                    scheduler.hold(topic, partition, offset, due_ms)
                    blocked.add(source)
                    continue
            offsets = self.offsets.partition(topic, partition)
            if offset in offsets.skip:  # a previous owner finished it: its outcome is written
                offsets.skip.discard(offset)
                offsets.track(offset).finish()
                self.metrics.recovered.inc()
                continue
            entry = offsets.track(offset)
            try:
                job = serde.decode_as(msg.value(), "PushJob")
            except DecodeError as exc:
                self._poison(msg, entry, exc.reason)
                continue
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if raw_key else job["topic"]
            lane = job["lane"]
            if lane == "BULK" and scheduler.is_retry_topic(topic):
                lane = "RETRY"
            if buffers.add(Pending(entry, job, key, lane, source)):
                buffers.paused.add(source)
                self.consumer.pause([TopicPartition(topic, partition)])

    def _poison(self, msg: Message, entry: Entry, reason: str) -> None:
        """An undecodable record: its original bytes go to the DLQ, the loop moves on."""
        entry.add_pending()
        self.producer.produce(
            self.topics.dlq,
            value=msg.value(),
            key=msg.key(),
            headers=list[tuple[str, str | bytes | None]](dead_letter_headers(msg, reason)),
            on_delivery=functools.partial(self._delivered, entry),
        )
        self.metrics.dlq.labels("undecodable").inc()

    # -- APNs out ---------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Send what the buckets and the in-flight bound allow, priority lane first.

        Within a lane the keys take turns, one job each: keys that share a partition then
        advance together, so one busy key neither starves another nor holds that partition's
        committable offset back behind the other key's waiting jobs.
        """
        self._timer_s = None
        settings = self.settings
        live = self._live.count if self._live is not None else 1
        for lane in LANES:
            reserve = 0 if lane == "PRIORITY" else settings.priority_reserve
            budget = settings.max_in_flight - reserve - len(self._in_flight)
            if budget <= 0:
                return
            job_lane = "BULK" if lane == "RETRY" else lane
            bulk = lane != "PRIORITY"
            turns = []
            for key, queue in self.buffers.queues(lane):
                topic = queue[0].job["topic"]
                policy = self.book.for_topic(topic)
                bucket = self.throttle.bucket(
                    key, job_lane, policy.bucket_per_minute(job_lane, live)
                )
                turns.append((key, queue, policy, bucket, topic))
            rotate = len(turns) > 1
            cap = settings.bulk_in_flight_per_certificate
            pool = self.pool
            while turns:
                still = []
                for turn in turns:
                    key, queue, policy, bucket, topic = turn
                    if bulk and pool.in_flight_for(topic) >= cap:
                        continue  # answers will make room; the next turn of the loop resumes
                    wait = bucket.wait_s()
                    if wait > 0:
                        self._timer_s = wait if self._timer_s is None else min(self._timer_s, wait)
                        self.metrics.throttle_waits.labels(lane).inc()
                        continue
                    item = queue.popleft()
                    self._taken(item)
                    if rotate:
                        self.buffers.served(lane, key)
                    breaker = self.breakers[item.job["topic"]]
                    if not breaker.allow():
                        self._defer(item, breaker.retry_after_s())
                    else:
                        bucket.try_take()  # due now (wait_s was 0): takes the send
                        if self._send(item, policy):
                            budget -= 1
                            if budget <= 0:
                                return
                    if queue:
                        still.append(turn)
                turns = still

    def _taken(self, item: Pending) -> None:
        if self.buffers.taken(item):
            self.buffers.paused.discard(item.source)
            self.consumer.resume([TopicPartition(*item.source)])

    def _send(self, item: Pending, policy: PushPolicy) -> bool:
        """Submit the push; False if it could not be (no certificate: FAILED at once)."""
        job = item.job
        self._next_id += 1
        cid = str(self._next_id)
        expiration = job["expiration"]
        request = ApnsRequest(
            correlation_id=cid,
            token_hex=job["token_hex"],
            topic=job["topic"],
            payload=_payload(job),
            apns_id=_apns_id(),
            expiration=expiration // 1000 if expiration else 0,
            push_type="mdm" if job["kind"] == "MDM" else "alert",
        )
        try:
            self.pool.submit(request, lane=PRIORITY if item.lane == "PRIORITY" else BULK)
        except UnknownCertificateError:
            self._finish(item, [self._outcome(job, "FAILED", reason=WRONG_TOPIC)])
            return False
        self._in_flight[cid] = InFlight(item, policy.max_attempts)
        return True

    # -- answers ----------------------------------------------------------------------------------
    def _complete(self, answers: list[ApnsResponse]) -> None:
        for answer in answers:
            flight = self._in_flight.pop(answer.correlation_id, None)
            if flight is None:
                continue
            item = flight.item
            job = item.job
            verdict = classify(answer)
            breaker = self.breakers[job["topic"]]
            if verdict.opens_breaker:
                breaker.record_failure(verdict.reason)
            else:
                breaker.record_success()
            self.metrics.latency.observe(answer.latency_ms / 1000)
            if verdict.verdict is Verdict.SENT:
                self._finish(item, [self._outcome(job, "SENT", answer=answer)])
            elif verdict.verdict is Verdict.PERMANENT:
                outcome = self._outcome(
                    job, "FAILED", answer=answer, reason=verdict.reason,
                    apns_timestamp=verdict.token_dead_since_ms,
                )
                self._finish(item, [outcome])
            elif verdict.opens_breaker:
                # The certificate or the connection is at fault, not the job: not burned.
                self._retry(item, job["attempt"], self.scheduler.tier_for_wait(
                    breaker.retry_after_s()), answer, verdict)
            else:
                self._transient(item, flight.max_attempts, answer, verdict)

    def _transient(
        self, item: Pending, max_attempts: int, answer: ApnsResponse, verdict: Classification
    ) -> None:
        job = item.job
        made = job["attempt"] + 1
        if made >= max_attempts:
            error = _error_text(answer, verdict)
            dead = dict(job, attempt=made, last_error=error)
            outcome = self._outcome(job, "DEAD_LETTERED", answer=answer, reason=verdict.reason)
            self._finish(
                item,
                [outcome],
                [(self.topics.dlq, self.serde.encode("PushJob", dead, self.topics.dlq),
                  [(ATTEMPT_HEADER, str(made).encode()),
                   ("mdmpush.dlq.reason", f"attempts exhausted: {error}".encode()[:1000])])],
            )
            self.metrics.dlq.labels("exhausted").inc()
            return
        tier = self.scheduler.tier_for_failure(made, verdict.long_backoff)
        self._retry(item, made, tier, answer, verdict)

    def _retry(
        self,
        item: Pending,
        attempt: int,
        tier: int,
        answer: ApnsResponse | None,
        verdict: Classification | None,
    ) -> None:
        """RETRYING outcome + the job on retry tier `tier`, carrying `attempt` attempts made."""
        job = item.job
        scheduler = self.scheduler
        error = _error_text(answer, verdict) if verdict is not None else BREAKER_OPEN
        again = dict(job, attempt=attempt, last_error=error)
        topic = scheduler.topics[tier]
        not_before = _real_ms() + scheduler.delays_ms[tier]
        reason = verdict.reason if verdict is not None else BREAKER_OPEN
        outcome = self._outcome(job, "RETRYING", answer=answer, reason=reason)
        self._finish(
            item,
            [outcome],
            [(topic, self.serde.encode("PushJob", again, topic),
              scheduler.headers(attempt, not_before))],
        )
        self.metrics.retry(topic)

    def _defer(self, item: Pending, wait_s: float) -> None:
        """The certificate's breaker is open: straight to a retry tier, nothing sent or burned."""
        self._retry(item, item.job["attempt"], self.scheduler.tier_for_wait(wait_s), None, None)

    # -- Kafka out --------------------------------------------------------------------------------
    def _outcome(
        self,
        job: dict[str, Any],
        state: str,
        *,
        answer: ApnsResponse | None = None,
        reason: str | None = None,
        apns_timestamp: int | None = None,
    ) -> dict[str, Any]:
        return {
            "job_id": job["job_id"],
            "request_id": job["request_id"],
            "tenant": job["tenant"],
            "enrollment_id": job["enrollment_id"],
            "state": state,
            "lane": job["lane"],
            "attempt": job["attempt"],
            "repush": job["repush"],
            "topic": job["topic"],
            "token_hex": job["token_hex"],
            "push_magic": job["push_magic"],
            "token_updated_at": job["token_updated_at"],
            "apns_id": answer.apns_id if answer is not None else None,
            "status": answer.status if answer is not None else None,
            "reason": reason,
            "apns_timestamp": apns_timestamp,
            "latency_ms": answer.latency_ms if answer is not None else None,
            "at": self.clock.now_ms(),
        }

    def _finish(
        self,
        item: Pending,
        outcomes: list[dict[str, Any]],
        copies: Sequence[tuple[str, bytes, Headers]] = (),
    ) -> None:
        """Produce the job's records; its offset becomes committable once all are acknowledged."""
        entry = item.entry
        entry.add_pending(len(outcomes) + len(copies))
        on_delivery = functools.partial(self._delivered, entry)
        produce = self.producer.produce
        outcomes_topic = self.topics.outcomes
        for outcome in outcomes:
            value = self.serde.encode("PushOutcome", outcome, outcomes_topic)
            marks = TOKEN_DEAD if outcome["status"] == 410 else None  # for the fan-out
            self._produce(produce, outcomes_topic, value, outcome["enrollment_id"], marks,
                          on_delivery)
            self.metrics.push(outcome["state"], outcome["reason"])
        for topic, value, headers in copies:
            self._produce(produce, topic, value, item.key, headers, on_delivery)

    def _produce(
        self,
        produce: Any,
        topic: str,
        value: bytes,
        key: str,
        headers: Headers | None,
        on_delivery: Any,
    ) -> None:
        while True:
            try:
                produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                # The producer queue is full: serve acknowledgements until there is room.
                self.producer.poll(0.05)

    def _delivered(self, entry: Entry, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            # The idempotent producer has given up after its retries: stop without storing
            # this offset, so a restarted sender sends the job again (at least once).
            log.error("Kafka refused a record: %s", err)
            self._fatal = err
            return
        entry.acked()

    def _committed(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """A failed commit is made again at the next interval (unless the partition is gone)."""
        self._commit_sent = None
        failed = partitions if err is not None else [tp for tp in partitions if tp.error]
        if failed:
            log.warning("offset commit failed (%s): %s", err, failed)
            for tp in failed:
                self.offsets.recommit(tp.topic, tp.partition)

    def _commit(self, *, asynchronous: bool) -> bool:
        """Commit the position of every partition that moved (see commit_marks.py); False if
        none had."""
        commits = self.offsets.commits()
        if not commits:
            return False
        offsets = [TopicPartition(c.topic, c.partition, c.offset, metadata=c.metadata)
                   for c in commits]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)  # -> _committed
            else:
                self._committed(None, self.consumer.commit(offsets=offsets, asynchronous=False))
        except KafkaException as exc:  # e.g. the partition was just revoked: sent again
            log.warning("offset commit failed: %s", exc)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)


def _payload(job: dict[str, Any]) -> bytes:
    if job["kind"] == "MDM":
        # = json.dumps({"mdm": magic}, separators=(",", ":")), ~35x cheaper per push.
        return ('{"mdm":' + encode_basestring_ascii(job["push_magic"] or "") + "}").encode()
    return (job["aps_payload"] or '{"aps":{}}').encode()


def _apns_id() -> str:
    """A random (version 4) UUID in canonical form, as str(uuid.uuid4()) but ~5x cheaper."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _error_text(answer: ApnsResponse | None, verdict: Classification | None) -> str:
    if answer is None or verdict is None:
        return BREAKER_OPEN
    if answer.status is not None:
        return f"{answer.status} {verdict.reason}"
    return f"{verdict.reason}: {answer.error or ''}"[:500]


def _real_ms() -> int:
    """Real epoch ms: retry tiers are about Kafka and APNs, never on the simulated clock."""
    return int(time.time() * 1000)
