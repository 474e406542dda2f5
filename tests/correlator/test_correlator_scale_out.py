"""Two correlator replicas share the work by enrollment; killing one changes no verdict.

Check-ins and outcomes are both keyed by enrollment id with the crc32 partitioner, so with equal
partition counts an enrollment's check-ins and pushes share one partition number. Each replica
holds only the enrollments and pending pushes of the outcomes partitions it owns (its gauges
say how many), and the survivor of a SIGKILL restores the other's partitions from the state
topic and their check-ins from the check-ins topic: every push still gets exactly one verdict,
the one the device's behaviour calls for. Real processes, real broker.
"""

from __future__ import annotations

import time
import zlib
from collections import Counter

import pytest

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from tests.correlator.harness import Feed, Reader, Replica, verdicts

pytestmark = pytest.mark.kafka

PARTITIONS = 4
N = 120
DEADLINE_MS = 5_000


def partition_of(enrollment: str) -> int:
    """librdkafka's default partitioner for a keyed record: crc32 of the key."""
    return zlib.crc32(enrollment.encode()) % PARTITIONS


def wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_replicas_each_hold_half_and_a_kill_changes_no_verdict(
    kafka_settings: KafkaSettings,
) -> None:
    create_topics(kafka_settings, all_topics(), partitions_override=PARTITIONS)
    topics = Topics(kafka_settings.topic_prefix)
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    devices = [f"E{i:03d}" for i in range(N)]
    for e in devices:
        feed.token_update(e, clock.now_ms() - 60_000)
    before, during, silent = devices[:N // 3], devices[N // 3:2 * N // 3], devices[2 * N // 3:]
    a, b = (Replica(kafka_settings, clock, name, deadline_ms=DEADLINE_MS,
                    race_window_ms=DEADLINE_MS, repush_silent=False) for name in "ab")
    for replica in (a, b):
        replica.proc.env["MDMPUSH_KAFKA_SESSION_TIMEOUT_MS"] = "6000"
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    try:
        a.proc.start()
        b.proc.start()
        b.proc.wait_for_log("assigned outcomes partitions", timeout_s=60)
        a.proc.wait_for_log("assigned outcomes partitions", timeout_s=60)
        # Settled: both hold partitions, none twice (a may have held all before b joined).
        wait(lambda: a.ready() and b.ready() and not a.partitions() & b.partitions(), 30,
             "the two replicas to share the partitions")
        mine = {"a": a.partitions(), "b": b.partitions()}
        assert mine["a"] and mine["b"] and not mine["a"] & mine["b"]
        assert mine["a"] | mine["b"] == set(range(PARTITIONS))

        for e in devices:
            feed.outcome(e)
        wait(lambda: a.gauges()["mdmpush_correlator_pending"]
             + b.gauges()["mdmpush_correlator_pending"] == N, 30, "every push pending")
        # Each replica holds exactly its partitions' enrollments and pushes: about half each.
        for name, replica in (("a", a), ("b", b)):
            own = sum(partition_of(e) in mine[name] for e in devices)
            g = replica.gauges()
            assert g["mdmpush_correlator_enrollments"] == own, (name, g, own)
            assert g["mdmpush_correlator_pending"] == own, (name, g, own)
            assert 0.25 * N <= own <= 0.75 * N, (name, own)

        for e in before:
            feed.checkin(e)
        outcomes.wait(lambda rs: len(verdicts(rs)) >= len(before) // 2, what="first verdicts")
        b.proc.kill()  # mid-run: its pushes are pending, some answered already
        for e in during:
            feed.checkin(e)  # answers while b's partitions have no owner
        outcomes.wait(lambda rs: len({v["job_id"] for v in verdicts(rs)}) >= N,
                      timeout_s=90, what="a verdict for every push")
        time.sleep(1.0)
        outcomes.poll()  # a doubled verdict would follow its first closely
        assert a.gauges()["mdmpush_correlator_enrollments"] == N  # a took b's over
    finally:
        a.proc.stop()
        b.proc.stop()
        outcomes.close()

    counts = Counter(v["job_id"] for v in verdicts(outcomes.records))
    assert set(counts.values()) == {1}, [j for j, n in counts.items() if n > 1]
    states = {v["enrollment_id"]: v["state"] for v in verdicts(outcomes.records)}
    assert states == {**{e: "ANSWERED" for e in before + during},
                      **{e: "UNANSWERED" for e in silent}}
