"""The sender end to end against the real broker and the APNs simulator over TLS."""

from __future__ import annotations

import pytest

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.sim.apns.server import SimulatorThread
from tests.support.sender_harness import (
    Pki,
    Reader,
    by_state,
    job,
    not_before_of,
    produce_jobs,
    produce_raw,
    running_sender,
    sender_settings,
)

pytestmark = pytest.mark.kafka


def test_jobs_of_two_certificates_are_sent(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader,
) -> None:
    jobs = [job(pki.topics[i % 2], i) for i in range(40)]
    jobs += [job(pki.topics[0], 100 + i, lane="PRIORITY") for i in range(10)]
    produce_jobs(kafka_settings, retry_ready.jobs_bulk, jobs[:40])
    produce_jobs(kafka_settings, retry_ready.jobs_priority, jobs[40:])
    with running_sender(sender_settings(pki, sim.url), kafka_settings):
        records = outcomes.wait(lambda rs: len(rs) >= 50, 20)
    sent = by_state(records)["SENT"]
    assert {r["job_id"] for r in sent} == {j["job_id"] for j in jobs}
    assert all(r["status"] == 200 and r["apns_id"] and r["latency_ms"] is not None for r in sent)
    assert {r["topic"] for r in sent} == set(pki.topics)
    assert sim.snapshot().status(200) == 50


def test_permanent_errors_fail_with_reason(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader,
) -> None:
    topic = pki.topics[0]
    dead_token = "d" * 64
    sim.faults.unregister([dead_token], at_ms=1_700_000_000_000)
    jobs = [
        job(topic, 1, token="zz"),  # not hex: refused before APNs, FAILED InvalidJob unsent
        job(topic, 2, token=dead_token),  # 410 Unregistered with its timestamp
        job(topic, 3),
    ]
    jobs[2]["topic"] = "com.apple.mgmt.External.not-ours"  # no certificate here: WrongTopic
    produce_jobs(kafka_settings, retry_ready.jobs_bulk, jobs, key=lambda j: topic)
    with running_sender(sender_settings(pki, sim.url), kafka_settings):
        records = outcomes.wait(lambda rs: len(rs) >= 3, 20)
    got = {r["job_id"]: r for r in records}
    assert got["req/E1"]["state"] == "FAILED" and got["req/E1"]["status"] is None
    assert got["req/E1"]["reason"].startswith("InvalidJob: token")
    assert got["req/E2"]["state"] == "FAILED" and got["req/E2"]["status"] == 410
    assert got["req/E2"]["reason"] == "Unregistered"
    assert got["req/E2"]["apns_timestamp"] == 1_700_000_000_000
    assert got["req/E3"]["state"] == "FAILED" and got["req/E3"]["reason"] == "WrongTopic"
    assert got["req/E3"]["status"] is None
    assert sim.snapshot().status(200) == 0


def test_transient_errors_retry_then_send_never_early(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader, bulk_jobs: list[dict],
) -> None:
    sim.faults.share_503 = 1.0
    retries = Reader(kafka_settings, retry_ready.retry(200))
    settings = sender_settings(pki, sim.url)
    with running_sender(settings, kafka_settings):
        outcomes.wait(lambda rs: len(by_state(rs).get("RETRYING", [])) >= len(bulk_jobs), 20)
        sim.faults.share_503 = 0.0
        records = outcomes.wait(lambda rs: len(by_state(rs).get("SENT", [])) >= len(bulk_jobs), 20)
    retries.wait(lambda rs: len(rs) >= len(bulk_jobs), 5)
    retrying = by_state(records)["RETRYING"]
    assert all(r["status"] == 503 and r["reason"] == "ServiceUnavailable" for r in retrying)
    assert all(r["attempt"] == 0 for r in retrying)
    sent = {r["job_id"]: r for r in by_state(records)["SENT"]}
    assert all(r["attempt"] >= 1 for r in sent.values())
    # Never early: each SENT after the due time of the retry record it came from.
    due = {r["job_id"]: not_before_of(r) for r in retries.records}
    for job_id, outcome in sent.items():
        assert outcome["at"] >= due[job_id], job_id
    retries.close()


def test_exhausted_attempts_go_to_the_dlq(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader,
) -> None:
    sim.faults.share_500 = 1.0
    produce_jobs(kafka_settings, retry_ready.jobs_bulk, [job(pki.topics[0], i) for i in range(3)])
    dlq = Reader(kafka_settings, retry_ready.dlq)
    with running_sender(sender_settings(pki, sim.url, default_max_attempts=3), kafka_settings):
        records = outcomes.wait(lambda rs: len(by_state(rs).get("DEAD_LETTERED", [])) >= 3, 20)
        dead = dlq.wait(lambda rs: len(rs) >= 3, 10)
    states = by_state(records)
    assert len(states["RETRYING"]) == 6  # attempts 0 and 1 of each job
    assert sorted(r["attempt"] for r in states["DEAD_LETTERED"]) == [2, 2, 2]
    assert all(r["attempt"] == 3 and r["last_error"] == "500 InternalServerError" for r in dead)
    dlq.close()


def test_poison_record_goes_to_dlq_and_the_loop_continues(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader,
) -> None:
    topic = pki.topics[0]
    produce_raw(kafka_settings, retry_ready.jobs_bulk, b"not avro at all", key=topic)
    produce_jobs(kafka_settings, retry_ready.jobs_bulk, [job(topic, 1)])
    dlq = Reader(kafka_settings, retry_ready.dlq, decode=False)
    with running_sender(sender_settings(pki, sim.url), kafka_settings):
        outcomes.wait(lambda rs: len(rs) >= 1, 20)
        poison = dlq.wait(lambda rs: len(rs) >= 1, 10)
    assert poison[0].value() == b"not avro at all"
    headers = dict(poison[0].headers())
    assert b"unknown wire format" in headers["mdmpush.dlq.reason"]
    assert headers["mdmpush.dlq.source.topic"].decode() == retry_ready.jobs_bulk
    assert outcomes.records[0]["state"] == "SENT"
    dlq.close()
