"""The correlator process against the real broker: one verdict per push, each cause diagnosed."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from tests.correlator.harness import (
    TOPIC_A,
    TOPIC_B,
    Feed,
    Reader,
    running,
    token_of,
    verdicts,
)

pytestmark = pytest.mark.kafka

FAST = {"race_window_ms": 1_000, "race_enrollment_ms": 3_000, "deadline_ms": 3_000}


@pytest.fixture
def readers(kafka_settings: KafkaSettings, topics: Topics) -> Iterator[dict[str, Reader]]:
    rs = {
        "outcomes": Reader(kafka_settings, topics.outcomes, "PushOutcome"),
        "alerts": Reader(kafka_settings, topics.alerts, "UnansweredPush"),
        "jobs": Reader(kafka_settings, topics.jobs_priority, "PushJob"),
        "dlq": Reader(kafka_settings, topics.dlq, None),
    }
    yield rs
    for r in rs.values():
        r.close()


def by_enrollment(records: list[dict]) -> dict[str, dict]:
    return {r["enrollment_id"]: r for r in records}


def test_each_cause_gets_one_verdict_and_the_right_alert(
    kafka_settings: KafkaSettings, topics: Topics, readers: dict[str, Reader]
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    now = clock.now_ms()
    for e in ("answered", "unenrolled", "wrong", "stale", "unreachable", "failed"):
        feed.token_update(e, now - 60_000, topic=TOPIC_B if e == "wrong" else TOPIC_A)
    feed.checkin("unenrolled", "CHECK_OUT", now - 30_000)
    feed.token_update("stale", now - 10_000, token="cd" * 32)  # after the job was built
    with running(kafka_settings, clock, **FAST):
        for e in ("answered", "unenrolled", "wrong", "stale", "unreachable"):
            feed.outcome(e, token_updated_at=now - 60_000)
        feed.outcome("failed", state="FAILED", status=400, reason="DeviceTokenNotForTopic")
        time.sleep(0.3)
        feed.checkin("answered", raw_message_type="Idle", status="Idle")
        readers["outcomes"].wait(lambda rs: len(verdicts(rs)) >= 5, what="5 verdicts")
        readers["alerts"].wait(lambda rs: len(rs) >= 5, what="5 alerts")
        jobs = readers["jobs"].wait(
            lambda rs: any(j["repush"] == 2 for j in rs), what="stale-token re-push")
        time.sleep(1.5)  # nothing more may come
        readers["outcomes"].poll()
        readers["alerts"].poll()
    v = verdicts(readers["outcomes"].records)
    assert Counter(r["job_id"] for r in v).most_common(1)[0][1] == 1
    got = {r["enrollment_id"]: (r["state"], r["reason"]) for r in v}
    assert got == {
        "answered": ("ANSWERED", None),
        "unenrolled": ("UNANSWERED", "unenrolled"),
        "wrong": ("UNANSWERED", "wrong_topic"),
        "stale": ("UNANSWERED", "stale_token"),
        "unreachable": ("UNANSWERED", "device_unreachable"),
    }
    assert 0 < by_enrollment(v)["answered"]["latency_ms"] < 3_000
    a = by_enrollment(readers["alerts"].records)
    assert len(readers["alerts"].records) == 5 and "answered" not in a
    assert a["failed"]["diagnosis"] == "WRONG_TOPIC"
    assert a["failed"]["evidence"]["apns_reason"] == "DeviceTokenNotForTopic"
    assert a["wrong"]["evidence"]["enrollment_topic"] == TOPIC_B
    assert a["unenrolled"]["evidence"]["checkout_at"] == str(now - 30_000)
    assert a["unreachable"]["evidence"]["last_contact_at"] == str(now - 60_000)
    assert a["unreachable"]["deadline_at"] == a["unreachable"]["pushed_at"] + 3_000
    assert a["unreachable"]["flagged_at"] >= a["unreachable"]["deadline_at"]
    new_token = [j for j in jobs if j["repush"] == 2]
    assert [(j["job_id"], j["token_hex"]) for j in new_token] == [("req-1/stale#r2", "cd" * 32)]
    assert "req-1/stale#r2" in a["stale"]["action"]
    # Apple's advice: every silent 200 was re-pushed once after the race window.
    silent = {j["enrollment_id"] for j in jobs if j["repush"] == 1}
    assert silent == {"unenrolled", "wrong", "stale", "unreachable"}


def test_enrollment_race_is_re_pushed_then_answered(
    kafka_settings: KafkaSettings, topics: Topics, readers: dict[str, Reader]
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    with running(kafka_settings, clock, **FAST, repush_silent=False):
        now = clock.now_ms()
        feed.token_update("new", now)
        feed.token_update("old", now - 600_000)
        feed.outcome("new", at=now + 300)  # lost the race: the device was not listening yet
        feed.outcome("old", at=now + 300)
        jobs = readers["jobs"].wait(lambda rs: len(rs) >= 1, what="race re-push")
        assert [(j["job_id"], j["repush"], j["lane"]) for j in jobs] == [
            ("req-1/new#r1", 1, "PRIORITY")]
        # The sender's outcome of the re-push is not a verdict of its own ...
        feed.outcome("new", job_id="req-1/new#r1", repush=1)
        feed.checkin("new")  # ... and the device answers it.
        out = readers["outcomes"].wait(lambda rs: len(verdicts(rs)) >= 2, what="verdicts")
        time.sleep(1.0)
        readers["outcomes"].poll()
        readers["jobs"].poll()
    v = by_enrollment(verdicts(out))
    assert len(verdicts(readers["outcomes"].records)) == 2
    assert (v["new"]["state"], v["new"]["reason"], v["new"]["job_id"]) == (
        "ANSWERED", "enrollment_race", "req-1/new")
    assert v["new"]["repush"] == 0
    # Not near its enrollment, repush_silent off: no re-push, just the deadline.
    assert (v["old"]["state"], v["old"]["reason"]) == ("UNANSWERED", "device_unreachable")
    assert len(readers["jobs"].records) == 1


def test_stale_push_magic_schedules_the_self_healing_push_25h_later(
    kafka_settings: KafkaSettings, topics: Topics, readers: dict[str, Reader]
) -> None:
    clock = Clock(speed=36_000)  # 25 simulated hours take 2.5 s
    feed = Feed(kafka_settings, topics, clock)
    now = clock.now_ms()
    hour = 3_600_000
    feed.token_update("E1", now - 2 * hour, magic="m-E1", udid="U1")
    feed.token_update("E2", now - hour, magic="m-E2", udid="U1")  # re-enrolled, CheckOut lost
    # No race-window step (window = deadline), so the self-healing push is the first re-push.
    with running(kafka_settings, clock, deadline_ms=300_000, race_window_ms=300_000):
        pushed = feed.outcome("E1", token_updated_at=now - 2 * hour)
        alerts = readers["alerts"].wait(lambda rs: len(rs) >= 1, what="alert")
        assert alerts[0]["diagnosis"] == "STALE_PUSH_MAGIC"
        assert alerts[0]["evidence"]["duplicate_enrollment"] == "E2"
        assert "req-1/E1#r1 scheduled" in alerts[0]["action"]
        jobs = readers["jobs"].wait(lambda rs: len(rs) >= 1, timeout_s=15,
                                    what="self-healing push")
        time.sleep(0.5)
        readers["jobs"].poll()
    assert len(jobs) == 1
    heal = jobs[0]
    assert heal["job_id"] == "req-1/E1#r1"
    assert (heal["push_magic"], heal["token_hex"]) == ("m-E1", token_of("E1"))
    assert heal["created_at"] >= pushed["at"] + 25 * hour
    v = verdicts(readers["outcomes"].wait(lambda rs: len(verdicts(rs)) >= 1, what="verdict"))
    assert [(r["job_id"], r["reason"]) for r in v] == [("req-1/E1", "stale_push_magic")]


def test_poison_records_go_to_the_dlq_and_the_loop_goes_on(
    kafka_settings: KafkaSettings, topics: Topics, readers: dict[str, Reader]
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    feed.token_update("E1", clock.now_ms() - 60_000)
    with running(kafka_settings, clock, **FAST):
        feed.raw(topics.outcomes, b"\xc3\x01garbage-fingerprint")
        feed.raw(topics.checkins, b"not avro at all")
        feed.outcome("E1")
        feed.checkin("E1")
        readers["outcomes"].wait(lambda rs: len(verdicts(rs)) >= 1, what="verdict")
        readers["dlq"].wait(lambda _: len(readers["dlq"].messages) >= 2, what="2 DLQ records")
    for msg in readers["dlq"].messages:
        headers = dict(msg.headers() or [])
        source = headers["mdmpush.dlq.source.topic"]
        assert isinstance(source, bytes) and source.decode() in (topics.outcomes, topics.checkins)
        assert headers["mdmpush.dlq.reason"]
    assert verdicts(readers["outcomes"].records)[0]["state"] == "ANSWERED"
