"""Pure parts of the sender: throttle rates with a fake clock, policy resolution, offsets, tiers."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.common.catalogue import Topics
from services.common.kafka.io import NO_OFFSET, Position, group_consumer_config
from services.common.kafka.memory import MemoryBroker, MemoryKafkaIO
from services.common.policy import PushPolicy
from services.common.settings import KafkaSettings
from services.sender.apns.breaker import SWEEP_FLOOR, BreakerRegistry
from services.sender.commit_marks import MAX_METADATA_CHARS, decode_marks, encode_marks
from services.sender.metrics import LATENCY_BUCKETS, SenderMetrics
from services.sender.offsets import OffsetTracker
from services.sender.pauses import PartitionPauses, PauseReason
from services.sender.policy import PolicyBook
from services.sender.runner import CONSUMER_DEFAULTS
from services.sender.scheduler import RetryScheduler
from services.sender.throttle import Throttle, TokenBucket
from tests.sender.loop_fakes import StaticPolicies


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(bucket: TokenBucket, clock: FakeClock, seconds: float, wake_late_s: float) -> int:
    """A busy loop that waits exactly as told, plus a fixed lateness on every wake-up."""
    end = clock.now + seconds
    sent = 0
    while clock.now < end:
        if bucket.try_take():
            sent += 1
            continue
        clock.now += bucket.wait_s() + wake_late_s
    return sent


@pytest.mark.parametrize("per_minute", [50, 6000])
@pytest.mark.parametrize("late_s", [0.0, 0.001, 0.004])
def test_bucket_long_run_rate_is_exact(per_minute: float, late_s: float) -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_minute, clock)
    minutes = 10
    sent = drive(bucket, clock, minutes * 60, late_s)
    assert sent == pytest.approx(per_minute * minutes, rel=0.002)


def test_bucket_burst_after_idle_is_a_tenth_of_a_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6000, clock)
    clock.now += 3600
    burst = 0
    while bucket.try_take():
        burst += 1
    assert burst == 10  # 100/s * 0.1 s
    assert TokenBucket(50, FakeClock()).try_take()


def test_bucket_zero_is_unthrottled_and_rate_changes_apply() -> None:
    clock = FakeClock()
    bucket = TokenBucket(0, clock)
    assert all(bucket.try_take() for _ in range(10_000)) and bucket.wait_s() == 0
    bucket.set_rate(60)
    sent = drive(bucket, clock, 60, 0.0)
    assert sent == pytest.approx(60, abs=1)
    bucket.set_rate(120)
    assert drive(bucket, clock, 60, 0.0) == pytest.approx(120, abs=1)


def test_throttle_keys_are_independent() -> None:
    clock = FakeClock()
    throttle = Throttle(clock)
    a = throttle.bucket("A", "BULK", 60)
    b = throttle.bucket("B", "BULK", 60)
    assert a.try_take() and not a.try_take()
    assert b.try_take()
    assert throttle.bucket("A", "BULK", 120) is a and a.per_minute == 120


def test_unthrottled_keys_share_one_bucket_and_keep_nothing() -> None:
    """A flood of jobs for distinct unthrottled keys (made-up certificates) leaves no bucket
    behind; a key throttled again after an unthrottled spell starts afresh."""
    clock = FakeClock()
    throttle = Throttle(clock)
    shared = throttle.bucket("K0", "BULK", 0)
    for n in range(10_000):
        bucket = throttle.bucket(f"K{n}", "BULK", 0)
        assert bucket is shared and bucket.try_take(more=True) and bucket.wait_s() == 0
    assert len(throttle) == 0 and shared.idle and shared.unthrottled
    throttled = throttle.bucket("A", "BULK", 60)
    assert throttled.try_take() and not throttled.try_take() and len(throttle) == 1
    assert throttle.bucket("A", "BULK", 0) is shared and len(throttle) == 0  # its bucket dropped
    again = throttle.bucket("A", "BULK", 60)
    assert again is not throttled and again.try_take() and not again.try_take()


def test_breakers_are_bounded_under_a_flood_of_unknown_certificates() -> None:
    """Idle breakers are dropped as new ones pile up, not only at the 60 s sweep; the breakers
    of failing certificates are kept whatever the flood."""
    clock = FakeClock()
    breakers = BreakerRegistry(cool_down_s=10, clock=clock)
    failing = [f"F{n}" for n in range(3 * SWEEP_FLOOR // 4)]
    for topic in failing:
        breakers[topic].record_failure("BadCertificate")
    most = 0
    for n in range(100_000):
        assert breakers[f"U{n}"].allow()
        most = max(most, len(breakers))
    assert most <= 2 * len(failing)  # the last drop kept the failing ones: twice those at most
    assert sorted(breakers.open_topics()) == sorted(failing)
    assert all(not breakers[topic].allow() for topic in failing)  # still open, still the same


def test_policy_resolution_and_bucket_rates() -> None:
    view = StaticPolicies()
    book = PolicyBook(PushPolicy(bulk_per_minute=50), view)
    assert book.for_topic("X").bulk_per_minute == 50  # nothing published: the settings'
    view.policies["*"] = PushPolicy(certificate="*", bulk_per_minute=100)
    view.policies["X"] = PushPolicy(certificate="X", bulk_per_minute=600, priority_per_minute=0,
                                    shards=3)
    assert book.for_topic("Y").bulk_per_minute == 100
    x = book.for_topic("X")
    assert x.bucket_per_minute("BULK", live_senders=4) == 200  # farm: rate / shards
    assert x.bucket_per_minute("PRIORITY", live_senders=4) == 0  # unthrottled
    per_instance = PushPolicy(certificate="X", bulk_per_minute=50, scope="PER_INSTANCE")
    assert per_instance.bucket_per_minute("BULK", live_senders=3) == 150
    del view.policies["X"]  # a tombstone
    assert book.for_topic("X").bulk_per_minute == 100
    record = {"certificate": "Z", "priority_per_minute": 0.0, "bulk_per_minute": 50.0,
              "scope": "FARM", "shards": 0, "max_attempts": 0, "updated_at": 0}
    z = PushPolicy.from_record(record)
    assert z.shards == 1 and z.max_attempts == 1


def test_offsets_advance_only_over_a_done_prefix_and_carry_what_is_done_past_it() -> None:
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    entries = [part.track(o) for o in range(10, 15)]
    for e in entries:
        e.add_pending(2)
    assert tracker.commits() == []  # nothing done yet
    entries[1].acked()
    entries[1].acked()  # 11 done, 10 not: the offset stays, 11 rides in the metadata
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(10, commit.metadata)) == (10, {11})
    assert tracker.commits() == []  # nothing changed since
    entries[0].acked()
    assert tracker.commits() == []  # 10 waits for its second record
    entries[0].acked()
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(12, commit.metadata)) == (12, set())
    entries[3].finish()
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(12, commit.metadata)) == (12, {13})
    entries[2].acked()
    entries[2].acked()
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(14, commit.metadata)) == (14, set())
    tracker.recommit("t", 0)  # the last commit failed: the same position again
    assert [c.offset for c in tracker.commits()] == [14]
    tracker.revoke("t", 0)
    entries[4].finish()
    assert tracker.commits() == []


def test_a_partition_taken_over_skips_what_the_commit_says_is_done() -> None:
    before = OffsetTracker().partition("t", 0)
    entries = [before.track(o) for o in range(100, 110)]
    for n in (2, 3, 7):
        entries[n].finish()
    commit = before.commit()
    assert commit is not None and commit.offset == 100
    after = OffsetTracker().partition("t", 0)
    assert after.recover(commit.offset, commit.metadata) == 3
    assert set(after.skip) == {102, 103, 107}


def test_commit_marks_round_trip_within_kafkas_metadata_limit() -> None:
    done = set(range(5_001, 25_000, 2))  # two keys interleaved, one of them stalled
    text = encode_marks(5_000, done)
    assert len(text) <= MAX_METADATA_CHARS
    assert decode_marks(5_000, text) == done
    assert encode_marks(5_000, set()) == "" and decode_marks(5_000, "") == set()


def test_commit_marks_that_do_not_fit_keep_the_lowest_offsets() -> None:
    rng = random.Random(1)
    done = {o for o in range(1, 200_000) if rng.random() < 0.5}  # incompressible
    text = encode_marks(0, done, limit=2_000)
    kept = decode_marks(0, text)
    assert 0 < len(text) <= 2_000 and kept and kept < done
    assert max(kept) < min(done - kept)  # a prefix of the done offsets, nothing invented


def test_foreign_or_damaged_commit_metadata_skips_nothing() -> None:
    assert decode_marks(0, "written by kafka-consumer-groups") == set()
    assert decode_marks(0, "d1:not base64!") == set()
    assert decode_marks(0, "d1:" + "QUJD") == set()  # base64, but not zlib


def test_retry_tiers() -> None:
    scheduler = RetryScheduler(Topics("p."), (500, 200, 10_000))
    assert scheduler.topics == ["p.mdm.push.retry.200ms.v1", "p.mdm.push.retry.500ms.v1",
                                "p.mdm.push.retry.10s.v1"]
    assert [scheduler.tier_for_failure(n) for n in (1, 2, 3, 9)] == [0, 1, 2, 2]
    assert scheduler.tier_for_failure(1, long_backoff=True) == 1
    assert scheduler.tier_for_wait(0.3) == 1 and scheduler.tier_for_wait(60) == 2
    scheduler.hold(("p.mdm.push.retry.200ms.v1", 0), due_ms=1_000)
    assert scheduler.next_wait_s(400) == pytest.approx(0.6)
    assert scheduler.due(999) == []
    assert scheduler.due(1_000) == [("p.mdm.push.retry.200ms.v1", 0)]
    assert scheduler.next_wait_s(1_000) is None


class RecordingIO:
    """Only what PartitionPauses calls: it must pause and resume on transitions only."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("pause", list(partitions)))

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.calls.append(("resume", list(partitions)))


def test_pauses_resume_a_partition_only_when_no_reason_is_left() -> None:
    io = RecordingIO()
    pauses = PartitionPauses(io)  # type: ignore[arg-type]
    tp = ("t", 0)
    pauses.pause(tp, PauseReason.BUFFER_FULL)
    pauses.pause(tp, PauseReason.BUFFER_FULL)
    pauses.pause(tp, PauseReason.RETRY_NOT_DUE)
    assert io.calls == [("pause", [tp])]
    pauses.release(tp, PauseReason.BUFFER_FULL)
    pauses.release(tp, PauseReason.BUFFER_FULL)  # not a reason any more: nothing
    assert io.calls == [("pause", [tp])] and pauses.reasons(tp) == {PauseReason.RETRY_NOT_DUE}
    pauses.release(tp, PauseReason.RETRY_NOT_DUE)
    assert io.calls == [("pause", [tp]), ("resume", [tp])] and not pauses.is_paused(tp)
    pauses.release(tp, PauseReason.RETRY_NOT_DUE)  # never paused: no resume either
    pauses.pause(tp, PauseReason.RETRY_NOT_DUE)
    pauses.forget(tp)  # revoked: the next assignment starts unpaused (librdkafka's pause lifted)
    assert not pauses.is_paused(tp) and pauses.reasons(tp) == frozenset()
    assert io.calls[-2:] == [("pause", [tp]), ("resume", [tp])]
    pauses.forget(tp)  # not paused: nothing to lift
    assert io.calls[-2:] == [("pause", [tp]), ("resume", [tp])]


def test_idle_buckets_and_closed_breakers_are_evicted_and_busy_ones_kept() -> None:
    clock = FakeClock()
    throttle = Throttle(clock)
    busy = throttle.bucket("A", "BULK", 60)
    assert busy.try_take()
    throttle.bucket("B", "BULK", 60).try_take()
    throttle.bucket("C", "BULK", 0)  # unthrottled: nothing to remember, nothing kept
    clock.now += 0.5
    assert len(throttle) == 2 and throttle.evict_idle() == 0
    clock.now += 1.0  # A's and B's next send was due 0.5 s ago: a new bucket would do the same
    assert throttle.evict_idle() == 2 and len(throttle) == 0
    breakers = BreakerRegistry(cool_down_s=10, clock=clock)
    breakers["X"].record_failure("BadCertificate")
    breakers["Y"].record_success()
    assert breakers.evict_closed() == 1 and breakers.open_topics() == ["X"]
    clock.now += 10
    assert breakers["X"].allow()  # the half-open trial is running: kept
    assert breakers.evict_closed() == 0
    breakers["X"].record_success()
    assert breakers.evict_closed() == 1


def test_memory_io_pauses_seeks_and_commits_like_a_consumer() -> None:
    broker = MemoryBroker()
    broker.create_topic("t", 2)
    for n in range(4):
        broker.append("t", str(n).encode(), partition=n % 2)
    io = MemoryKafkaIO(broker, "g")
    assigned: list[list[tuple[str, int]]] = []
    answers: list[tuple[str | None, list[tuple[str, int]]]] = []
    io.subscribe(["t"], on_assign=assigned.append, on_revoke=assigned.append,
                 on_committed=lambda e, failed: answers.append((e, failed)))
    io.pause([("t", 1)])  # not assigned yet: nothing to pause
    assert [r.value() for r in io.consume(10, 0)] == [b"0", b"2", b"1", b"3"]
    assert assigned == [[("t", 0), ("t", 1)]]
    io.seek(("t", 0), 1)
    io.pause([("t", 1)])
    io.seek(("t", 1), 0)
    assert [r.value() for r in io.consume(10, 0)] == [b"2"]
    io.resume([("t", 1)])
    assert [r.offset() for r in io.consume(10, 0)] == [0, 1]
    io.commit([Position("t", 0, 2, "meta")], asynchronous=True)
    assert answers == [] and io.consume(1, 0) == []
    assert answers == [(None, [])]
    assert io.committed([("t", 0), ("t", 1)], 1) == [Position("t", 0, 2, "meta"),
                                                     Position("t", 1, NO_OFFSET)]
    io.rebalance(revoke=[("t", 0)], assign=[("t", 0)])
    assert [r.offset() for r in io.consume(10, 0)] == []  # from the commit: read
    delivered: list[object] = []
    io.produce("t", b"x", partition=0, on_delivery=lambda err, msg: delivered.append(err))
    assert delivered == [] and io.poll(0) == 1 and delivered == [None]
    assert [r.offset() for r in io.consume(10, 0)] == [2]


def test_the_senders_librdkafka_defaults_yield_to_the_operators_overrides() -> None:
    kafka = KafkaSettings(consumer_overrides={"fetch.wait.max.ms": 100,
                                              "enable.auto.commit": True})
    config = group_consumer_config(kafka, group_id="g", name="sender",
                                   defaults=CONSUMER_DEFAULTS)
    assert config["fetch.wait.max.ms"] == 100  # the operator's
    assert config["partition.assignment.strategy"] == "range"  # the sender's default
    assert config["enable.auto.commit"] is False  # never: the loop commits itself
    assert config["group.id"] == "g" and config["client.id"] == "mdmpush-sender"


def test_latency_histogram_exports_what_prometheus_clients_own_would() -> None:
    """The sender's lock-free latency histogram against prometheus_client's Histogram as the
    oracle: values on, below, between and above the bounds give the same exposition."""
    metrics = SenderMetrics()
    oracle_registry = CollectorRegistry()
    oracle = Histogram("mdmpush_sender_apns_latency_seconds",
                       "Submit-to-answer time of APNs requests", buckets=LATENCY_BUCKETS,
                       registry=oracle_registry)
    rng = random.Random(7)
    values = [*LATENCY_BUCKETS, 0.0, 1e-9, 16.0, 1e6,
              *(rng.uniform(0, 20) for _ in range(500))]
    for value in values:
        metrics.latency.observe(value)
        oracle.observe(value)

    def series(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if line.startswith("mdmpush_sender_apns_latency_seconds")
                and "_created" not in line]

    ours = series(metrics.registry)
    assert ours == series(oracle_registry)
    assert f"mdmpush_sender_apns_latency_seconds_count {float(len(values))}" in ours


def test_outcome_counts_are_exported_at_flush() -> None:
    metrics = SenderMetrics()
    for _ in range(3):
        metrics.push("SENT", None)
    metrics.push("FAILED", "BadDeviceToken")

    def value(state: str, reason: str) -> float | None:
        return metrics.registry.get_sample_value(
            "mdmpush_sender_pushes_total", {"state": state, "reason": reason})

    assert value("SENT", "") is None  # counted, not yet exported
    metrics.flush()
    metrics.push("SENT", None)
    metrics.flush()
    assert (value("SENT", ""), value("FAILED", "BadDeviceToken")) == (4.0, 1.0)
