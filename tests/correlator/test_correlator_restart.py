"""SIGKILL mid-run, restart: every push still gets exactly one verdict."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from tests.correlator.harness import Correlator, Feed, Reader, verdicts

pytestmark = pytest.mark.kafka

N = 200


def test_kill_and_restart_loses_and_doubles_no_verdict(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    outcomes = Reader(kafka_settings, topics.outcomes, "PushOutcome")
    alerts = Reader(kafka_settings, topics.alerts, "UnansweredPush")
    now = clock.now_ms()
    devices = [f"E{i:03d}" for i in range(N)]
    for e in devices:
        feed.token_update(e, now - 60_000)
    answering = devices[: N // 2]  # the other half stays silent until the deadline
    proc = Correlator(kafka_settings, clock, race_window_ms=4_000, deadline_ms=4_000)
    try:
        proc.start()
        proc.wait_for_log("assigned outcomes partitions")
        for e in devices:
            feed.outcome(e)
        for e in answering[:50]:
            feed.checkin(e)
        outcomes.wait(lambda rs: len(verdicts(rs)) >= 10, what="first verdicts")
        proc.kill()  # mid-run: some answered, none past the deadline yet
        for e in answering[50:]:
            feed.checkin(e)  # contacts while the correlator is down
        proc.start()
        outcomes.wait(lambda rs: len({r["job_id"] for r in verdicts(rs)}) >= N, timeout_s=30,
                      what="all verdicts")
        time.sleep(2.0)  # a doubled verdict would show up now
        outcomes.poll()
        alerts.wait(lambda rs: len({r["job_id"] for r in rs}) >= N // 2, what="alerts")
    finally:
        proc.stop()
        outcomes.close()
        alerts.close()
    v = verdicts(outcomes.records)
    counts = Counter(r["job_id"] for r in v)
    assert len(counts) == N and max(counts.values()) == 1, counts.most_common(3)
    states = {r["enrollment_id"]: r["state"] for r in v}
    assert all(states[e] == "ANSWERED" for e in answering)
    assert all(states[e] == "UNANSWERED" for e in devices[N // 2:])
    assert {r["enrollment_id"] for r in alerts.records} == set(devices[N // 2:])
