"""Semantic poison on the correlator's topics (outcomes, check-ins): schema-valid but wrong.

The real correlator process on the real broker, with a 3 s answer deadline. Every poison SENT
outcome that names a job ends in a verdict (ANSWERED or UNANSWERED) or, when it breaks the
input limits (services/common/limits.py), a dead letter with the reason, never in a pending push
that no deadline closes; the correlator stays up; and a valid push followed by its device's
check-in, published after all the poison, is still answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from services.common.clock import Clock
from services.common.settings import KafkaSettings
from services.devstack.pipeline import Pipeline, PipelineSpec
from tests.fuzz.poison import (
    TOPIC,
    YEAR_3000_MS,
    checkin,
    dead_letter_reasons,
    now_ms,
    produce,
)
from tests.support.correlator_grace import GRACE_MS
from tests.support.sender_harness import Reader

DEADLINE_MS = 3_000
VERDICTS = ("ANSWERED", "UNANSWERED")


def sent(enrollment_id: str, at: int | None = None, **extra: Any) -> dict[str, Any]:
    record = {
        "job_id": f"r/{enrollment_id[:300]}", "request_id": "r", "tenant": "acme",
        "enrollment_id": enrollment_id, "state": "SENT", "lane": "BULK", "attempt": 0,
        "repush": 0, "topic": TOPIC, "token_hex": "ab" * 32, "push_magic": "magic",
        "token_updated_at": now_ms(), "apns_id": None, "status": 200, "reason": None,
        "apns_timestamp": None, "latency_ms": 1.0, "at": now_ms() if at is None else at,
        "rides_on": None,
    }
    record.update(extra)
    return record


def idle(enrollment_id: str) -> dict[str, Any]:
    """The device's answer to a push: it asks its MDM server for commands (Status Idle)."""
    return checkin(enrollment_id, at=now_ms() + 1, message_type="COMMAND_REPORT",
                   raw_message_type="Idle", status="Idle", token_hex=None, topic=None)


@pytest.fixture
def correlator(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Pipeline]:
    spec = PipelineSpec([TOPIC], senders=0, fanout=False, partitions=2, env={
        "correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": str(DEADLINE_MS),
                       "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS}})
    with Pipeline(kafka_settings, Clock(), tmp_path, spec) as pipeline:
        yield pipeline


def verdict_of(outcomes: list[dict[str, Any]], job_id: str) -> str | None:
    return next((o["state"] for o in outcomes
                 if o["job_id"] == job_id and o["state"] in VERDICTS), None)


@pytest.mark.kafka
def test_poison_outcomes_and_checkins_end_in_verdicts(correlator: Pipeline) -> None:
    kafka, topics = correlator.kafka, correlator.topics
    poison = {
        "negative at": sent("C-neg", at=-1),
        "empty job id": sent("C-emptyjob", job_id=""),
        "far-future token_updated_at": sent("C-tok", token_updated_at=YEAR_3000_MS),
    }
    refused = {"empty enrollment id": sent("")}
    produce(kafka, topics.outcomes, "PushOutcome", list(poison.values()), key="acme")
    refused_values = produce(kafka, topics.outcomes, "PushOutcome", list(refused.values()),
                             key="acme")
    refused_values += produce(kafka, topics.checkins, "CheckinEvent",
                              [checkin(""), checkin("C" * 100_000)], key="acme")
    produce(kafka, topics.checkins, "CheckinEvent", [checkin("C-negcheckin", at=-1)], key="acme")
    produce(kafka, topics.outcomes, "PushOutcome", [sent("C-valid")], key="C-valid")
    produce(kafka, topics.checkins, "CheckinEvent", [idle("C-valid")],
            key="C-valid")
    with closing(Reader(kafka, topics.outcomes)) as outcomes:
        outcomes.wait(lambda rs: verdict_of(rs, "r/C-valid") is not None, timeout_s=120)
        assert verdict_of(outcomes.records, "r/C-valid") == "ANSWERED"
        named = {n: r["job_id"] for n, r in poison.items() if r["job_id"]}
        outcomes.wait(lambda rs: all(verdict_of(rs, j) for j in named.values()), timeout_s=60)
        assert verdict_of(outcomes.records, "r/") is None  # the refused one: dead letter only
    with closing(Reader(kafka, topics.dlq, decode=False)) as dlq:
        dlq.wait(lambda ms: set(refused_values) <= set(dead_letter_reasons(ms)), timeout_s=30)
        reasons = dead_letter_reasons(dlq.records)
    assert all("enrollment_id" in reasons[v] for v in refused_values), reasons
    assert correlator.correlator is not None and correlator.correlator.alive, correlator.logs()


OUT_OF_RANGE = {
    "at in the year 3000": {"at": YEAR_3000_MS},
    "negative attempt and repush": {"attempt": -5, "repush": -5},
}


@pytest.mark.kafka
@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_a_push_out_of_range_gets_a_verdict(correlator: Pipeline, case: str) -> None:
    kafka, topics = correlator.kafka, correlator.topics
    produce(kafka, topics.outcomes, "PushOutcome", [sent("C-odd", **OUT_OF_RANGE[case])],
            key="C-odd")
    with closing(Reader(kafka, topics.outcomes)) as outcomes:
        outcomes.wait(lambda rs: verdict_of(rs, "r/C-odd") is not None, timeout_s=30)
    assert correlator.correlator is not None and correlator.correlator.alive


@pytest.mark.kafka
def test_a_huge_enrollment_id_is_set_aside_and_the_next_push_answered(
    correlator: Pipeline,
) -> None:
    kafka, topics = correlator.kafka, correlator.topics
    [huge] = produce(kafka, topics.outcomes, "PushOutcome", [sent("C" * 100_000)], key="acme")
    produce(kafka, topics.outcomes, "PushOutcome", [sent("C-after")], key="acme")
    produce(kafka, topics.checkins, "CheckinEvent", [idle("C-after")],
            key="acme")
    with closing(Reader(kafka, topics.outcomes)) as outcomes:
        outcomes.wait(lambda rs: verdict_of(rs, "r/C-after") is not None, timeout_s=45)
        assert verdict_of(outcomes.records, "r/C-after") == "ANSWERED"
    with closing(Reader(kafka, topics.dlq, decode=False)) as dlq:
        dlq.wait(lambda ms: huge in dead_letter_reasons(ms), timeout_s=30)
        reason = dead_letter_reasons(dlq.records)[huge]
    assert "enrollment_id: 100000 characters" in reason, reason
    assert correlator.correlator is not None and correlator.correlator.alive
