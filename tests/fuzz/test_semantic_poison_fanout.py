"""Semantic poison on the fan-out's topics (requests, check-ins): schema-valid but wrong.

The real fan-out process on the real broker. Each poison request ends in the DLQ (found by its
bytes, with a reason) or is handled (a job or an outcome names its request id); each poison
check-in ends in the DLQ or leaves the registry sane; and a valid request published after all of
them still becomes its job: the fan-out keeps going.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from services.common.clock import Clock
from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.devstack.pipeline import Pipeline, PipelineSpec
from tests.fuzz.poison import (
    TOPIC,
    YEAR_3000_MS,
    checkin,
    dead_letter_reasons,
    now_ms,
    produce,
    request,
)
from tests.support.sender_harness import Reader


@pytest.fixture
def fanout(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Pipeline]:
    pipeline = Pipeline(kafka_settings, Clock(), tmp_path,
                        PipelineSpec([TOPIC], senders=0, correlator=False, partitions=2))
    with pipeline:
        yield pipeline


def enroll(pipeline: Pipeline, ids: list[str]) -> None:
    produce(pipeline.kafka, pipeline.topics.checkins, "CheckinEvent",
            [checkin(i) for i in ids], key="acme")
    assert pipeline.wait_registry(ids, timeout_s=90), pipeline.logs()


@pytest.mark.kafka
def test_poison_requests_are_dead_lettered_or_handled(fanout: Pipeline) -> None:
    kafka, topics = fanout.kafka, fanout.topics
    enroll(fanout, ["E1", "E2", "E9"])
    poison = {
        "100,000 targets": request("r-many", [f"U{i}" for i in range(100_000)]),
        "empty request id": request("", ["E1"]),
        "1 KB request id": request("R" * 1000, ["E1"]),
        "empty tenant": request("r-notenant", ["E1"], tenant=""),
        "empty target id": request("r-emptyid", ["E1", ""]),
        "400-char target id": request("r-longid", ["E" * 400]),
        "negative requested_at": request("r-negative", ["E1"], requested_at=-1),
        "far-future requested_at": request("r-future", ["E1"], requested_at=YEAR_3000_MS),
        "far-future expiration": request("r-expiry", ["E2"], expiration=YEAR_3000_MS),
        "negative expiration": request("r-negexpiry", ["E2"], expiration=-1),
        "APS without payload, 40-deep payload": request(
            "r-aps", ["E1"], kind="APS", aps_payload="[" * 40 + "]" * 40),
    }
    values = dict(zip(poison, produce(kafka, topics.requests, "NotificationRequest",
                                      list(poison.values()), key="acme"), strict=True))
    # E9 is named by no poison request: its push is outstanding for nobody, so a bulk request
    # for it becomes a job (not a rider coalesced onto an earlier push).
    produce(kafka, topics.requests, "NotificationRequest", [request("r-valid", ["E9"])],
            key="acme")
    with closing(Reader(kafka, topics.jobs_bulk)) as jobs, \
            closing(Reader(kafka, topics.outcomes)) as outcomes, \
            closing(Reader(kafka, topics.dlq, decode=False)) as dlq:
        jobs.wait(lambda rs: any(r["request_id"] == "r-valid" for r in rs), timeout_s=120)
        outcomes.drain(quiet_s=2, limit_s=10)
        dlq.drain(quiet_s=2, limit_s=10)
        handled = {r["request_id"] for r in jobs.records + outcomes.records}
        dead = dead_letter_reasons(dlq.records)
    assert fanout.fanout is not None and fanout.fanout.alive, fanout.logs()
    for name, record in poison.items():
        value = values[name]
        if value in dead:
            assert dead[value], f"{name}: dead-lettered without a reason"
        else:
            assert record["request_id"] in handled, f"{name}: neither dead-lettered nor handled"
    for must_be_dead in ("100,000 targets", "empty request id", "1 KB request id",
                         "empty tenant", "empty target id", "400-char target id"):
        assert values[must_be_dead] in dead, f"{must_be_dead}: not dead-lettered"


@pytest.mark.kafka
def test_poison_checkins_are_dead_lettered_and_the_registry_stays_sane(fanout: Pipeline) -> None:
    kafka, topics = fanout.kafka, fanout.topics
    poison = {
        "empty enrollment id": checkin(""),
        "100 KB udid": checkin("E3", udid="U" * 100_000),
        "non-hex token": checkin("E4", token_hex="zz" * 32),
        "short token": checkin("E5", token_hex="ab"),
        "topic with a space": checkin("E6", topic="com.apple mgmt"),
    }
    values = dict(zip(poison, produce(kafka, topics.checkins, "CheckinEvent",
                                      list(poison.values()), key="acme"), strict=True))
    enroll(fanout, ["E7"])  # a valid check-in after them is applied
    with closing(Reader(kafka, topics.dlq, decode=False)) as dlq:
        dlq.wait(lambda rs: len(rs) >= len(poison), timeout_s=60)
        dead = dead_letter_reasons(dlq.records)
    for name in poison:
        assert dead.get(values[name]), f"{name}: not dead-lettered with a reason"
    registry = load_registry(kafka)
    assert not {"", "E3", "E4", "E5", "E6"} & registry.keys()
    assert fanout.fanout is not None and fanout.fanout.alive, fanout.logs()


@pytest.mark.kafka
def test_a_far_future_checkin_does_not_block_later_token_updates(fanout: Pipeline) -> None:
    kafka, topics = fanout.kafka, fanout.topics
    produce(kafka, topics.checkins, "CheckinEvent",
            [checkin("E8", token_hex="aa" * 32, at=YEAR_3000_MS)], key="acme")
    assert fanout.wait_registry(["E8"], timeout_s=90), fanout.logs()
    produce(kafka, topics.checkins, "CheckinEvent",
            [checkin("E8", token_hex="bb" * 32, at=now_ms())], key="acme")
    produce(kafka, topics.checkins, "CheckinEvent", [checkin("E9")], key="acme")
    assert fanout.wait_registry(["E9"], timeout_s=90), fanout.logs()
    record: dict[str, Any] = load_registry(kafka, "E8")["E8"]
    assert record["token_hex"] == "bb" * 32
    assert record["token_updated_at"] <= now_ms() + 3_600_000


