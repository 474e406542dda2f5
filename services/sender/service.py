"""The sender's loop: Kafka jobs in, APNs pushes out, one outcome per attempt back to Kafka.

One thread drives everything without blocking: `consume` a batch (priority, bulk and the retry
tiers from one consumer, range-assigned, so one sender owns partition p of all of them — the
key's whole traffic, which makes its local buckets the farm-wide throttle), queue the jobs per
lane and key, send what the buckets and the in-flight bounds allow (priority first), collect APNs
answers, produce outcomes / retries / DLQ copies without flushing, and commit each partition's
offset once every record produced for its done prefix is acknowledged (with the jobs finished
past it, so that a crash repeats only what was in flight: commit_marks.py). A partition taken
over also skips the jobs whose outcome its previous owner wrote after its last commit
(already_sent.py), and a loop that stalled for longer than the group keeps a silent member's
partitions (SIGSTOP, a frozen VM) sends nothing until the group confirms they are still its own
(see `_stalled`).

The loop talks to Kafka through `KafkaIO` and to APNs through `ApnsPool` only, so its rules run
in unit tests on `MemoryKafkaIO` and a fake pool; `runner.build_sender` wires the real ones.

When Kafka refuses a record (at least once holds in every case):
- an outcome or retry copy refused for good (too large, not authorised, ...): the job goes to the
  DLQ with the reason, and the loop goes on — its offset is committed once the DLQ has it;
- a record the producer gave up on after its retries, or any DLQ write refused (or the DLQ limit
  exceeded): the loop stops with that error and commits nothing past the job, so the restarted
  sender reads it again.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring_ascii

from confluent_kafka import KafkaError, KafkaException, Message

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka import TOKEN_DEAD_HEADER
from services.common.kafka.dead_letter import DeadLetterWriter
from services.common.kafka.io import KafkaIO, Partition, Position, Record
from services.common.kafka.producer import (
    DeliveryError,
    Headers,
    PermanentDeliveryError,
    is_permanent,
)
from services.common.limits import InvalidInput, check_push_job
from services.common.ops_server import Heartbeat
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde
from services.sender.already_sent import SOURCE_HEADER, AlreadySent
from services.sender.apns.breaker import BreakerRegistry
from services.sender.apns.classify import Classification, Verdict, classify
from services.sender.apns.pool import ApnsPool, UnknownCertificateError
from services.sender.apns.types import ApnsRequest, ApnsResponse
from services.sender.backlog import RecentPushes
from services.sender.commit_marks import decode_since
from services.sender.job import LANES, Lane, PushJob, PushOutcome
from services.sender.lanes import LaneBuffers, Pending
from services.sender.metrics import SenderMetrics
from services.sender.offsets import Entry, OffsetTracker
from services.sender.pauses import PartitionPauses, PauseReason
from services.sender.policy import LiveSenders, PolicyBook
from services.sender.scheduler import ATTEMPT_HEADER, RetryScheduler
from services.sender.settings import SenderSettings
from services.sender.throttle import Throttle

log = logging.getLogger(__name__)

WRONG_TOPIC = "WrongTopic"
#: Reason prefix of a job outside the limits (services/common/limits.py): never sent.
INVALID_JOB = "InvalidJob"
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
#: Gauges, policy updates and the member count are refreshed this often.
HOUSEKEEPING_S = 0.1
#: Idle throttle buckets and closed breakers are dropped this often (see Throttle.evict_idle).
EVICT_S = 60.0
#: While the loop holds its pushes after a stall, it asks the group whether its partitions are
#: still its own at most this often.
PROBE_S = 0.5
#: The job's lane as the Avro record names it (a dict lookup: no enum call per record).
_JOB_LANES = {"PRIORITY": Lane.PRIORITY, "BULK": Lane.BULK}
#: Outcome states that finish a job on their own (no retry or DLQ copy goes with them): the
#: only ones a partition's next owner may take as "already sent" (already_sent.py).
_FINISHING = frozenset({"SENT", "FAILED"})
#: The verdicts that end in one of those states.
_OUTCOME_SKIPPED = frozenset({Verdict.SENT, Verdict.PERMANENT})


class SenderStopped(RuntimeError):
    """The loop stopped because Kafka lost or refused a record it could not set aside; nothing
    past the job concerned was committed, so a restarted sender sends it again."""


class InFlight:
    """A job on the wire: what to finish, and the policy it was sent under."""

    __slots__ = ("item", "max_attempts")

    def __init__(self, item: Pending, max_attempts: int) -> None:
        self.item = item
        self.max_attempts = max_attempts


class Sender:
    """One sender: `run()` until `stop()` (or `start()`, `step()`..., `shutdown()` in tests)."""

    def __init__(
        self,
        settings: SenderSettings,
        io: KafkaIO,
        pool: ApnsPool,
        *,
        topics: Topics,
        serde: AvroSerde,
        policies: PolicyBook,
        dead_letters: DeadLetterWriter,
        live: LiveSenders | None = None,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        epoch_ms: Callable[[], int] | None = None,
        heartbeat: Heartbeat | None = None,
        already_sent: AlreadySent | None = None,
        stall_fence_s: float | None = None,
        outstanding: Callable[[], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.io = io
        self.pool = pool
        self.topics = topics
        self.serde = serde
        self.book = policies
        self.dead_letters = dead_letters
        self._live = live
        self.clock = clock or Clock.from_settings()
        #: Loop timing, buckets and breakers (monotonic seconds).
        self._monotonic = monotonic
        #: Retry due times: real epoch ms, never the simulated clock (they are about Kafka and
        #: APNs, which are not simulated).
        self._epoch_ms = epoch_ms or _real_ms
        self.scheduler = RetryScheduler(topics, settings.retry_delays_ms)
        self.throttle = Throttle(monotonic)
        self.breakers = BreakerRegistry(settings.breaker_s, monotonic)
        self.offsets = OffsetTracker()
        self.buffers = LaneBuffers(settings.buffer_per_partition)
        self.pauses = PartitionPauses(io)
        self.metrics = SenderMetrics()
        self._in_flight: dict[str, InFlight] = {}
        self._next_id = 0
        self._apns_ids = _apns_ids()
        #: Label children of the counters the dispatch loop bumps (a labels() call costs more
        #: than the increment); every lane's is exported at 0 from the start.
        self._throttle_waits = {lane: self.metrics.throttle_waits.labels(lane) for lane in LANES}
        self._stop = threading.Event()
        self._fatal: SenderStopped | None = None
        self._timer_s: float | None = None
        self._next_commit = 0.0
        #: When the async commit still unanswered was sent (None: none is).
        self._commit_sent: float | None = None
        self._next_housekeeping = 0.0
        self._next_evict = 0.0
        #: True once the group has assigned partitions (tests wait for it; so does /readyz).
        self.assigned = threading.Event()
        #: Stamped by every turn of the loop (/livez).
        self.heartbeat = heartbeat or Heartbeat(30.0)
        #: Reads the outcomes a partition's previous owner wrote past its commit (None: off).
        self._already_sent = already_sent
        #: A gap longer than this between turns of the loop (or within one, before a send) may
        #: have cost the group membership: nothing is sent until the group answers (None: off).
        self._stall_fence_s = stall_fence_s
        #: The jobs outstanding on the assigned partitions (backlog.py; None: not known, the
        #: unrecorded window is then its floor).
        self._outstanding = outstanding
        #: Monotonic time the current turn started (or a rebalance was served).
        self._turn_at = 0.0
        self._fenced = False
        #: Jobs are waiting for room in the unrecorded window (set by each turn's dispatch).
        self._window_full = False
        #: Pushes made since the start (a running total) and those of the recent past: the
        #: window is a share of those too (backlog.py).
        self._pushed = 0
        self._recent = RecentPushes()
        #: Records the loop produced whose delivery result has not been served yet.
        self._unacked = 0
        self._next_probe = 0.0
        #: Why the group refused the last commit (read by `_probe`).
        self._probe_refused: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to drain and return (safe from signal handlers and other threads)."""
        self._stop.set()

    def run(self) -> None:
        """Consume and send until `stop()`; then drain in-flight work, commit, close."""
        self.start()
        try:
            while not self._stop.is_set() and self._fatal is None:
                self.step()
        finally:
            self.shutdown()
        if self._fatal is not None:
            raise self._fatal

    def not_ready(self) -> str | None:
        """/readyz: None once the policies are read and the group assigned partitions, else why
        not (read from the ops server's thread: plain reads)."""
        if self._stop.is_set() or self._fatal is not None:
            return "stopping"
        if not self.assigned.is_set():
            return "no partitions assigned yet"
        return None

    def start(self) -> None:
        """Read the policies, join the group."""
        self.book.load()
        self._turn_at = self._monotonic()
        subscribed = [self.topics.jobs_priority, self.topics.jobs_bulk, *self.scheduler.topics]
        self.io.subscribe(subscribed, on_assign=self._on_assign, on_revoke=self._on_revoke,
                          on_committed=self._committed)
        log.info("sender %s consuming %s", self.settings.instance_id, ", ".join(subscribed))

    def step(self) -> None:
        """One turn of the loop: due retries, consume, send, answers, acknowledgements, commit."""
        self.heartbeat.beat()
        turn_at = self._monotonic()
        fence = self._stall_fence_s
        if fence is not None and turn_at - self._turn_at > fence:
            self._stalled(turn_at - self._turn_at)
        self._turn_at = turn_at
        now_ms = self._epoch_ms()
        self.offsets.turn(now_ms)
        for source in self.scheduler.due(now_ms):
            self.pauses.release(source, PauseReason.RETRY_NOT_DUE)
        timer = self._wait_bound(now_ms)
        # A full window waits on Kafka's answers: the producer's (below) while records are on
        # their way, else the consumer's (the commit that releases retried jobs).
        on_commit = self._window_full and not self._in_flight and not self._unacked
        busy = (self._in_flight or self._window_full) and not self._fenced and not on_commit
        consume_wait = 0.0 if busy else min(BUSY_WAIT_S if on_commit else IDLE_WAIT_S, timer)
        self._route(self.io.consume(self.settings.consume_batch, consume_wait))
        if self._fenced:
            self._probe()
        window = self._dispatch()
        # Jobs wait for the window: what frees it is Kafka's acknowledgements, so the loop waits
        # on those (below) rather than on the consumer.
        self._window_full = (window > 0 and self.buffers.size > 0
                             and len(self._in_flight) + self.offsets.unrecorded >= window)
        if fence is not None and self._monotonic() - self._turn_at > fence:
            self._stalled(self._monotonic() - self._turn_at)  # before libcurl writes them
        if not self._fenced:  # answers wait: after a stall, timed out requests would be retried
            # With the window full an answer makes no room, an acknowledgement does: the loop
            # waits on APNs only while no record is on its way to Kafka.
            waits = self._in_flight and not (self._window_full and self._unacked)
            answers = self.pool.poll(min(BUSY_WAIT_S, timer) if waits else 0.0)
            if answers:
                self._complete(answers)
        if self._window_full and self._unacked:
            self._flush(min(BUSY_WAIT_S, timer))
        else:
            self.io.poll(0)
        now = self._monotonic()
        answered = self._commit_sent is None or now - self._commit_sent > COMMIT_ANSWER_S
        if answered and now >= self._next_commit:
            self._next_commit = now + COMMIT_INTERVAL_S
            if self._commit(asynchronous=True):
                self._commit_sent = now
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            self._housekeeping(now)

    def _wait_bound(self, now_ms: int) -> float:
        """How long the loop may block: until the next throttle or retry-tier due time."""
        bound = IDLE_WAIT_S if self._timer_s is None else self._timer_s
        held = self.scheduler.next_wait_s(now_ms)
        return bound if held is None else min(bound, held)

    def _housekeeping(self, now: float) -> None:
        self._recent.mark(now, self._pushed)
        self.book.poll()
        # Dead letters held while the DLQ topic does not exist, written again with back-off;
        # their partitions' other jobs go on, committed no further than them.
        self.dead_letters.resend_due()
        if self._live is not None:
            self._live.poll()
        if now >= self._next_evict:
            self._next_evict = now + EVICT_S
            self.throttle.evict_idle()
            self.breakers.evict_closed()
        m = self.metrics
        m.flush()
        m.in_flight.set(len(self._in_flight))
        m.buffered.set(self.buffers.size)
        m.breaker_open.set(len(self.breakers.open_topics()))
        for reason in PauseReason:
            m.paused.labels(reason).set(self.pauses.count(reason))

    def shutdown(self) -> None:
        """Finish what is on the wire (bounded), commit what is done, leave the group."""
        try:
            self._drain(self.settings.shutdown_timeout_s)
            for answer in self.pool.close():  # only if the drain timed out: retried later
                self._in_flight.pop(answer.correlation_id, None)
            self._commit(asynchronous=False)
            self.io.close()
        finally:
            self.metrics.flush()
            self.book.close()
        log.info("sender %s stopped", self.settings.instance_id)

    def _drain(self, timeout_s: float) -> None:
        """Finish what is on the wire and get its records acknowledged (bounded, in real time:
        this waits on the network)."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            answers = self.pool.poll(0.05)
            if answers:
                self._complete(answers)
            self.io.poll(0)
        try:
            self.io.flush(max(0.1, deadline - time.monotonic()))
        except DeliveryError as exc:  # not committed: sent again by the next owner
            log.warning("records not acknowledged at shutdown: %s", exc)

    # -- rebalance --------------------------------------------------------------------------------
    def _on_assign(self, partitions: list[Partition]) -> None:
        """Read the jobs a previous owner finished past its commits, so they are not re-sent."""
        log.info("assigned %d partitions", len(partitions))
        try:
            committed = self.io.committed(partitions, 10.0)
        except KafkaException as exc:  # at least once still holds: they are sent again
            log.warning("could not read the committed positions: %s", exc)
            committed = []
        recovered = 0
        taken: dict[Partition, tuple[int, int]] = {}
        for position in committed:
            if position.metadata and position.offset >= 0:
                part = self.offsets.partition(position.topic, position.partition)
                recovered += part.recover(position.offset, position.metadata)
                since_ms = decode_since(position.metadata)
                if since_ms is not None:
                    taken[(position.topic, position.partition)] = (position.offset, since_ms)
        if recovered:
            log.info("%d jobs past the committed offsets were finished before: not re-sent",
                     recovered)
        if taken and self._already_sent is not None:
            self._read_already_sent(taken)
        self._rebalanced()
        self.assigned.set()

    def _read_already_sent(self, taken: dict[Partition, tuple[int, int]]) -> None:
        """Skip the jobs past the commits whose outcome the previous owner wrote (only here, at
        assignment: the hot path pays one dict lookup per record, as for the commit marks)."""
        assert self._already_sent is not None
        started = time.monotonic()
        found = self._already_sent.read(taken)
        count = sum(self.offsets.partition(*source).already_sent(offsets)
                    for source, offsets in found.items())
        log.info("%d jobs past the committed offsets have an outcome from their previous "
                 "owner: not re-sent (outcomes read in %.2f s)", count,
                 time.monotonic() - started)

    def _rebalanced(self) -> None:
        """The group has just assigned or taken partitions: the loop's view of what it owns is
        current, whatever stall came before."""
        if self._fenced:
            log.info("pushes resume: the group rebalanced after the stall")
        self._fenced = False
        self._turn_at = self._monotonic()

    def _stalled(self, gap_s: float) -> None:
        """The loop did not run for `gap_s`, long enough for the group to have declared this
        member dead and handed its partitions to another sender (a SIGSTOP, a frozen VM, a
        starved host: librdkafka's heartbeats stopped too). Sending what is buffered now would
        push jobs another sender owns and sends as well (a zombie). So nothing is sent until the
        group answers: a commit under this member's generation accepted (the partitions are
        still its own) or a rebalance served (those taken away are dropped by `_on_revoke`)."""
        if not self._fenced:
            log.warning("the loop stalled for %.1f s: holding every push until the group "
                        "confirms this sender still owns its partitions", gap_s)
            self.metrics.fenced.inc()
        self._fenced = True
        self._next_probe = 0.0
        # Submitted before the stall but not yet written to a connection: not sent yet, so
        # back to their queues, sent only if the partition is still this sender's.
        taken = self.pool.unsend()
        for request in reversed(taken):
            flight = self._in_flight.pop(request.correlation_id, None)
            if flight is not None:
                self.buffers.restore(flight.item)
        if taken:
            log.info("%d requests not yet written to APNs taken back", len(taken))

    def _probe(self) -> None:
        """While fenced: commit every partition's position synchronously; Kafka accepts it only
        from a member of the current generation (otherwise librdkafka rejoins, and the revoke
        callback drops the partitions)."""
        now = self._monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + PROBE_S
        self._probe_refused = None
        positions = self.offsets.commits(force=True)
        if positions:
            self.io.commit(positions, asynchronous=False)  # answered in _committed, at once
        if self._probe_refused is None:
            log.info("pushes resume: the group confirmed this sender's partitions after the "
                     "stall")
            self._fenced = False
            self._turn_at = self._monotonic()
        else:
            log.warning("still holding pushes: the group refused a commit (%s); waiting for "
                        "the rebalance", self._probe_refused)

    def _on_revoke(self, partitions: list[Partition]) -> None:
        """Finish in-flight work so its offsets are committed, then forget the partitions.

        After a stall, the partitions were taken while the loop was not running: another
        sender owns them and has pushed (or pushes) their uncommitted jobs again. Their requests
        in flight are then forgotten, answers unread: the timeouts a long stall leaves would
        be retried, pushing the jobs once more, and their outcomes are the new owner's."""
        fence = self._stall_fence_s
        if fence is not None and self._monotonic() - self._turn_at > fence:
            self._stalled(self._monotonic() - self._turn_at)
        if self._fenced:
            revoked = set(partitions)
            for cid in [cid for cid, flight in self._in_flight.items()
                        if flight.item.source in revoked]:
                del self._in_flight[cid]
        else:
            self._drain(5.0)
            self._commit(asynchronous=False)
        for source in partitions:
            self.offsets.revoke(*source)
            self.buffers.drop_source(source)
            self.scheduler.drop(source)
            self.pauses.forget(source)
        # Their held dead letters too: the next owner reads those jobs again and writes them.
        self.dead_letters.forget(set(partitions))
        self._rebalanced()
        self.assigned.clear()

    # -- Kafka in ---------------------------------------------------------------------------------
    def _route(self, messages: Sequence[Record]) -> None:
        if not messages:
            return
        self.dead_letters.consumed(len(messages))
        blocked: set[Partition] = set()
        now_ms = self._epoch_ms()
        scheduler, buffers, serde = self.scheduler, self.buffers, self.serde
        retry_topics = scheduler.topic_set
        for msg in messages:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            source = (topic, partition)
            if source in blocked:
                continue
            retry = topic in retry_topics
            if retry:
                due_ms = scheduler.wait_until(source, offset, msg, now_ms)
                if due_ms is not None:
                    self.pauses.pause(source, PauseReason.RETRY_NOT_DUE)
                    self.io.seek(source, offset)
                    scheduler.hold(source, due_ms, offset)
                    blocked.add(source)
                    continue
            offsets = self.offsets.partition(topic, partition)
            if offset in offsets.skip:  # a previous owner finished it: its outcome is written
                if offsets.skip.pop(offset):
                    self.metrics.skipped_already_sent.inc()
                else:
                    self.metrics.recovered.inc()
                offsets.track(offset).finish()
                continue
            entry = offsets.track(offset)
            try:
                job: PushJob = serde.decode_as(msg.value(), "PushJob")  # type: ignore[assignment]
            except DecodeError as exc:
                self._poison(msg, entry, exc.reason)
                continue
            lane = _JOB_LANES[job["lane"]]
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if raw_key else job["topic"]
            if retry and lane is Lane.BULK:
                lane = Lane.RETRY
            try:
                check_push_job(job)
            except InvalidInput as exc:  # another producer's job: FAILED, its certificate untouched
                self._finish(Pending(entry, job, key, lane, source),
                             [self._outcome(job, "FAILED", reason=f"{INVALID_JOB}: {exc}")])
                continue
            if buffers.add(Pending(entry, job, key, lane, source)):
                self.pauses.pause(source, PauseReason.BUFFER_FULL)

    def _poison(self, msg: Record, entry: Entry, reason: str) -> None:
        """An undecodable record: its original bytes go to the DLQ, the loop moves on."""
        log.warning("poison record %s[%s]@%d set aside in the DLQ: %s", msg.topic(),
                    msg.partition(), entry.offset, reason)
        entry.add_pending()
        try:
            self.dead_letters.write(
                source_topic=msg.topic() or "", partition=msg.partition() or 0,
                offset=entry.offset, key=msg.key(), value=msg.value(), reason=reason,
                on_delivery=functools.partial(self._dead_lettered, entry),
            )
        except Exception as exc:  # refused at once, or the DLQ limit: never silent
            self._fail(f"could not write the undecodable record at offset {entry.offset} of "
                       f"{msg.topic()}[{msg.partition()}] to the DLQ: {exc}", exc)
        self.metrics.dlq.labels("undecodable").inc()

    # -- APNs out ---------------------------------------------------------------------------------
    def _dispatch(self) -> int:
        """Send what the buckets, the in-flight bounds and the unrecorded window allow, priority
        lane first; returns the window (0: none).

        Within a lane the keys take turns, one job each: keys that share a partition then
        advance together, so one busy key neither starves another nor holds that partition's
        committable offset back behind the other key's waiting jobs.
        """
        self._timer_s = None
        if self._fenced:
            return 0
        settings = self.settings
        live = self._live.count if self._live is not None else 1
        window = self._window()
        for lane in LANES:
            reserve = 0 if lane is Lane.PRIORITY else settings.priority_reserve
            # Jobs answered but not yet under an acknowledged commit count too: what a SIGKILL
            # repeats is bounded by max_in_flight by construction (offsets.py).
            in_flight = len(self._in_flight)
            budget = settings.max_in_flight - reserve - in_flight - self.offsets.unsettled
            if window:  # what a next owner would push again: bounded by the window
                budget = min(budget, window - in_flight - self.offsets.unrecorded)
            if budget <= 0:
                return window
            job_lane = lane.job_lane
            bulk = lane is not Lane.PRIORITY
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
            fence = self._stall_fence_s
            monotonic = self._monotonic
            while turns:
                still = []
                for turn in turns:
                    key, queue, policy, bucket, topic = turn
                    if bulk and pool.in_flight_for(topic) >= cap:
                        continue  # answers will make room; the next turn of the loop resumes
                    wait = bucket.wait_s()
                    if wait > 0:
                        self._timer_s = wait if self._timer_s is None else min(self._timer_s, wait)
                        self._throttle_waits[lane].inc()
                        continue
                    if fence is not None and monotonic() - self._turn_at > fence:
                        self._stalled(monotonic() - self._turn_at)  # within this turn
                        return 0
                    item = queue.popleft()
                    if self.buffers.taken(item):
                        self.pauses.release(item.source, PauseReason.BUFFER_FULL)
                    if rotate:
                        self.buffers.served(lane, key)
                    breaker = self.breakers[item.job["topic"]]
                    if not breaker.allow():
                        self._defer(item, breaker.retry_after_s())
                    else:
                        # Due now (wait_s was 0): takes the send. Jobs left behind it are owed
                        # their send on time, so a late turn is made up (bounded: throttle.py).
                        bucket.try_take(more=bool(queue))
                        if self._send(item, policy):
                            budget -= 1
                            if budget <= 0:
                                return window
                    if queue:
                        still.append(turn)
                turns = still
        return window

    def _window(self) -> int:
        """The unrecorded window now: max(unrecorded_min, unrecorded_share x the larger of the
        jobs outstanding and the pushes of the last minute); 0 = none. It bounds repeats only
        where a next owner skips the jobs with an outcome (`already_sent`), so it applies only
        then."""
        settings = self.settings
        if self._already_sent is None or not settings.unrecorded_min:
            return 0
        outstanding = self._outstanding() if self._outstanding is not None else None
        base = max(outstanding or 0, self._recent.count(self._pushed))
        return max(settings.unrecorded_min, int(settings.unrecorded_share * base))

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
            apns_id=next(self._apns_ids),
            expiration=expiration // 1000 if expiration else 0,
            push_type="mdm" if job["kind"] == "MDM" else "alert",
        )
        try:
            self.pool.submit(request, lane=item.lane.job_lane)
        except UnknownCertificateError:
            self._finish(item, [self._outcome(job, "FAILED", reason=WRONG_TOPIC)])
            return False
        self._in_flight[cid] = InFlight(item, policy.max_attempts)
        self._pushed += 1
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
            # Off the wire, not yet recorded: a next owner skips a SENT / FAILED job once its
            # outcome is acknowledged, any other only once a commit covers it.
            item.entry.hold(until_settled=verdict.verdict not in _OUTCOME_SKIPPED)
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
        # Clamped: a record claiming attempts out of range (another producer's) still ends
        # after at most max_attempts sends, and the count stays an Avro int.
        made = min(max(job["attempt"], 0), max_attempts - 1) + 1
        if made >= max_attempts:
            error = _error_text(answer, verdict)
            dead: PushJob = {**job, "attempt": made, "last_error": error}
            outcome = self._outcome(job, "DEAD_LETTERED", answer=answer, reason=verdict.reason)
            item.entry.add_pending()  # the DLQ copy: counted before any record can be acked
            self._finish(item, [outcome])
            self._set_aside(item, dead, f"attempts exhausted: {error}",
                            [(ATTEMPT_HEADER, str(made).encode())])
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
        again: PushJob = {**job, "attempt": attempt, "last_error": error}
        topic = scheduler.topics[tier]
        not_before = self._epoch_ms() + scheduler.delays_ms[tier]
        reason = verdict.reason if verdict is not None else BREAKER_OPEN
        outcome = self._outcome(job, "RETRYING", answer=answer, reason=reason)
        self._finish(
            item,
            [outcome],
            [(topic, self.serde.encode("PushJob", dict(again), topic),
              scheduler.headers(attempt, not_before))],
        )
        self.metrics.retry(topic)

    def _defer(self, item: Pending, wait_s: float) -> None:
        """The certificate's breaker is open: straight to a retry tier, nothing sent or burned."""
        self._retry(item, item.job["attempt"], self.scheduler.tier_for_wait(wait_s), None, None)

    # -- Kafka out --------------------------------------------------------------------------------
    def _outcome(
        self,
        job: PushJob,
        state: str,
        *,
        answer: ApnsResponse | None = None,
        reason: str | None = None,
        apns_timestamp: int | None = None,
    ) -> PushOutcome:
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
        outcomes: list[PushOutcome],
        copies: Sequence[tuple[str, bytes, Headers]] = (),
    ) -> None:
        """Produce the job's records; its offset becomes committable once all are acknowledged."""
        item.entry.add_pending(len(outcomes) + len(copies))
        on_delivery = functools.partial(self._delivered, item)
        outcomes_topic = self.topics.outcomes
        encode = self.serde.encode
        for outcome in outcomes:
            value = encode("PushOutcome", outcome, outcomes_topic)  # type: ignore[arg-type]
            marks: Headers | None = None
            if outcome["state"] in _FINISHING:  # for a next owner of the job's partition
                entry = item.entry
                marks = [(SOURCE_HEADER, entry.partition.source + b"%d" % entry.offset)]
            if outcome["status"] == 410:  # for the fan-out
                marks = [*(marks or ()), *TOKEN_DEAD]
            self._produce(item, outcomes_topic, value, outcome["enrollment_id"], marks,
                          on_delivery)
            self.metrics.push(outcome["state"], outcome["reason"])
        for topic, value, headers in copies:
            self._produce(item, topic, value, item.key, headers, on_delivery)

    def _produce(self, item: Pending, topic: str, value: bytes, key: str,
                 headers: Headers | None, on_delivery: Callable[..., None]) -> None:
        self._unacked += 1
        try:
            self.io.produce(topic, value, key, headers, None, on_delivery)
        except PermanentDeliveryError as exc:  # e.g. too large: Kafka will never take it
            self._unacked -= 1
            self._refused(item, topic, exc)

    def _flush(self, timeout_s: float) -> None:
        """Send the records produced so far at once and serve their results as they come, for
        up to `timeout_s`: librdkafka ignores linger.ms during a flush, and with the window full
        no record would join them before they are acknowledged anyway."""
        with contextlib.suppress(DeliveryError):  # not all acknowledged yet (every record here
            self.io.flush(timeout_s)                # has its callback: no other DeliveryError)

    def _delivered(self, item: Pending, err: KafkaError | None, msg: Message) -> None:
        """Delivery result of an outcome or retry copy (served from `io.poll`)."""
        self._unacked -= 1
        if err is None:
            item.entry.acked()
            return
        if is_permanent(err):
            self._refused(item, msg.topic() or "?", err)
            return
        # The producer has given up after its retries (e.g. the broker was unreachable for
        # its whole delivery timeout): stop, committing nothing past this job.
        self._fail(f"Kafka lost a record of job {item.job['job_id']}: {err}")

    def _refused(self, item: Pending, topic: str, err: object) -> None:
        """Kafka refused one of the job's records for good: the job goes to the DLQ with the
        reason instead (it replaces the refused record among those its offset waits for)."""
        reason = f"Kafka refused a record for {topic}: {err}"
        item.entry.hold_until_settled()  # no outcome to skip it by: only a commit does
        log.error("job %s set aside in the DLQ: %s", item.job["job_id"], reason)
        self._set_aside(item, {**item.job, "last_error": reason[:500]}, reason)
        self.metrics.dlq.labels("refused").inc()

    def _set_aside(self, item: Pending, job: PushJob, reason: str,
                   extra_headers: Headers | None = None) -> None:
        """The job (as `job`) to the DLQ, with where it was read from and why; the caller
        has counted the DLQ record among those the job's offset waits for."""
        topic, partition = item.source
        try:
            self.dead_letters.write(
                source_topic=topic, partition=partition, offset=item.entry.offset,
                key=item.key.encode(), value=self.serde.encode("PushJob", dict(job),
                                                               self.topics.dlq),
                reason=reason, on_delivery=functools.partial(self._dead_lettered, item.entry),
                extra_headers=extra_headers,
            )
        except Exception as exc:  # refused at once, or the DLQ limit: never silent
            self._fail(f"could not write job {item.job['job_id']} to the DLQ: {exc}", exc)

    def _dead_lettered(self, entry: Entry, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            entry.acked()
        else:
            self._fail(f"Kafka refused a DLQ record (source offset {entry.offset}): {err}")

    def _fail(self, reason: str, cause: BaseException | None = None) -> None:
        """Stop the loop: the job concerned stays uncommitted and is read again (at least once)."""
        log.error("sender stopping: %s", reason)
        if self._fatal is None:
            self._fatal = SenderStopped(reason)
            if cause is not None:
                self._fatal.__cause__ = cause

    def _committed(self, error: str | None, failed: list[Partition]) -> None:
        """A failed commit is made again at the next interval (unless the partition is gone)."""
        self._commit_sent = None
        self.offsets.settle(failed)
        if failed or error is not None:
            self._probe_refused = error or f"{len(failed)} partition(s) refused"
        if failed:
            log.warning("offset commit failed (%s): %s", error, failed)
            for topic, partition in failed:
                self.offsets.recommit(topic, partition)

    def _commit(self, *, asynchronous: bool) -> bool:
        """Commit the position of every partition that moved (see commit_marks.py); False if
        none had."""
        commits: list[Position] = self.offsets.commits()
        if not commits:
            return False
        self.io.commit(commits, asynchronous=asynchronous)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def failure(self) -> SenderStopped | None:
        """Why the loop stopped by itself (None while it runs, or after a plain stop)."""
        return self._fatal


def _payload(job: PushJob) -> bytes:
    if job["kind"] == "MDM":
        # = json.dumps({"mdm": magic}, separators=(",", ":")), ~35x cheaper per push.
        return ('{"mdm":' + encode_basestring_ascii(job["push_magic"] or "") + "}").encode()
    return (job["aps_payload"] or '{"aps":{}}').encode()


def _apns_ids() -> Iterator[str]:
    """apns-id values: canonical version-4 UUIDs, unique rather than each random. APNs only
    needs an id that names one notification; a random 74-bit prefix per sender (drawn at start)
    followed by a counter in the last 48 bits is that, without a getrandom call per push."""
    h = os.urandom(16).hex()
    prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-"
    for n in itertools.count(int(h[20:], 16)):
        yield f"{prefix}{n & 0xFFFF_FFFF_FFFF:012x}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _error_text(answer: ApnsResponse | None, verdict: Classification | None) -> str:
    if answer is None or verdict is None:
        return BREAKER_OPEN
    if answer.status is not None:
        return f"{answer.status} {verdict.reason}"
    return f"{verdict.reason}: {answer.error or ''}"[:500]


def _real_ms() -> int:
    return int(time.time() * 1000)
