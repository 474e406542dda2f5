"""Pure parts of the sender: throttle rates with a fake clock, policy resolution, offsets, tiers."""

from __future__ import annotations

import random

import pytest

from services.common.catalogue import Topics
from services.sender.commit_marks import MAX_METADATA_CHARS, decode_marks, encode_marks
from services.sender.offsets import OffsetTracker
from services.sender.policy import PolicyBook, PushPolicy
from services.sender.scheduler import RetryScheduler
from services.sender.throttle import Throttle, TokenBucket


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


def test_policy_resolution_and_bucket_rates() -> None:
    book = PolicyBook(PushPolicy(bulk_per_minute=50))
    assert book.for_topic("X").bulk_per_minute == 50
    book.apply("*", PushPolicy(certificate="*", bulk_per_minute=100))
    book.apply("X", PushPolicy(certificate="X", bulk_per_minute=600, priority_per_minute=0,
                               shards=3))
    assert book.for_topic("Y").bulk_per_minute == 100
    x = book.for_topic("X")
    assert x.bucket_per_minute("BULK", live_senders=4) == 200  # farm: rate / shards
    assert x.bucket_per_minute("PRIORITY", live_senders=4) == 0  # unthrottled
    per_instance = PushPolicy(certificate="X", bulk_per_minute=50, scope="PER_INSTANCE")
    assert per_instance.bucket_per_minute("BULK", live_senders=3) == 150
    book.apply("X", None)  # tombstone
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
    assert (commit.offset, commit.metadata) == (12, "")
    entries[3].finish()
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(12, commit.metadata)) == (12, {13})
    entries[2].acked()
    entries[2].acked()
    [commit] = tracker.commits()
    assert (commit.offset, commit.metadata) == (14, "")
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
    assert after.skip == {102, 103, 107}


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
    scheduler.hold("p.mdm.push.retry.200ms.v1", 0, 5, due_ms=1_000)
    assert scheduler.next_wait_s(400) == pytest.approx(0.6)
    assert scheduler.due(999) == []
    assert scheduler.due(1_000) == [("p.mdm.push.retry.200ms.v1", 0)]
    assert scheduler.next_wait_s(1_000) is None
