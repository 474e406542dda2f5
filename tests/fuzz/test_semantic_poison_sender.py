"""Semantic poison on the sender's topics (jobs, retry tiers, config): schema-valid but wrong.

A real sender process and the APNs simulator, on the real broker. Each poison job must end as
its own outcome (FAILED with a reason, DEAD_LETTERED) or a dead letter, or be clamped (a due time
or an attempt count outside what the sender itself would write), and the valid job produced
after all of them, in the same partition, must still be sent: the sender keeps its pace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from services.sender.scheduler import ATTEMPT_HEADER, NOT_BEFORE_HEADER
from services.sim.apns.faults import Faults
from tests.support.bench_env import fresh_kafka, sender_process
from tests.support.sender_harness import (
    SERDE,
    TEST_DELAYS_MS,
    Pki,
    Reader,
    job,
    make_certs,
    produce_jobs,
    produce_raw,
    sender_settings,
    start_sim,
)

YEAR_3000_MS = 32_503_680_000_000
MAX_ATTEMPTS = 5


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_certs(tmp_path, 1)


def terminal_of(outcomes: list[dict[str, Any]], job_id: str) -> dict[str, Any] | None:
    return next((o for o in outcomes if o["job_id"] == job_id
                 and o["state"] in ("SENT", "FAILED", "DEAD_LETTERED")), None)


@pytest.fixture
def running(pki: Pki, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    faults: Faults = getattr(request, "param", None) or Faults()
    kafka, topics = fresh_kafka(partitions=1)
    sim = start_sim(pki, faults)
    settings = sender_settings(pki, sim.url, default_max_attempts=MAX_ATTEMPTS)
    with closing(Reader(kafka, topics.outcomes)) as outcomes, \
            sender_process(settings, kafka, tmp_path / "sender.log") as process:
        yield kafka, topics, outcomes, process
    sim.stop()


@pytest.mark.kafka
def test_poison_jobs_and_policies_end_in_an_outcome_and_the_next_job_is_sent(
    pki: Pki, running: Any
) -> None:
    kafka, topics, outcomes, process = running
    cert = pki.topics[0]
    poison = {
        "bad token": job(cert, 1, token="zz" * 32),
        "empty job id": job(cert, 2, job_id=""),
        "100 KB job id": job(cert, 3, job_id="J" * 100_000),
        "empty request id": job(cert, 4, request_id=""),
        "empty tenant": job(cert, 5, tenant=""),
        "negative created_at": job(cert, 6, created_at=-1, token_updated_at=-1),
        "far-future created_at": job(cert, 7, created_at=YEAR_3000_MS,
                                     token_updated_at=YEAR_3000_MS),
        "negative expiration": job(cert, 8, expiration=-5),
        "far-future expiration": job(cert, 9, expiration=YEAR_3000_MS),
        "negative repush": job(cert, 10, repush=-3),
    }
    # Policies no operator could publish through the SDK: each is clamped, the last one (for
    # this certificate) applies to the jobs below.
    for certificate, rates, shards, attempts in [
        ("", (-1.0, -1.0), -5, 0), ("x" * 10_000, (float("inf"), 1e308), 2**31 - 1, 2**31 - 1),
        ("*", (float("nan"), float("-inf")), 0, -7), (cert, (float("nan"), float("nan")), -5, 0),
    ]:
        produce_raw(kafka, topics.config, SERDE.encode("PushPolicy", {
            "certificate": certificate, "priority_per_minute": rates[0],
            "bulk_per_minute": rates[1], "scope": "FARM", "shards": shards,
            "max_attempts": attempts, "updated_at": -1}), key=certificate or "empty")
    produce_jobs(kafka, topics.jobs_bulk, poison.values(), partition=0)
    # A retry record due in the year 3000, then a valid one behind it in the same partition.
    tier = topics.retry(TEST_DELAYS_MS[0])
    produce_raw(kafka, tier, SERDE.encode("PushJob", job(cert, 11, attempt=1)), key=cert,
                headers=[(ATTEMPT_HEADER, b"1"), (NOT_BEFORE_HEADER, str(YEAR_3000_MS).encode())])
    produce_raw(kafka, tier, SERDE.encode("PushJob", job(cert, 12, attempt=1)), key=cert,
                headers=[(ATTEMPT_HEADER, b"1"), (NOT_BEFORE_HEADER, b"0")])
    valid = job(cert, 99)
    produce_jobs(kafka, topics.jobs_bulk, [valid], partition=0)

    outcomes.wait(lambda rs: terminal_of(rs, valid["job_id"]) is not None, timeout_s=120)
    assert process.poll() is None, "the sender died on a poison job"
    for name, record in poison.items():
        end = terminal_of(outcomes.records, record["job_id"])
        assert end is not None, f"{name}: no terminal outcome"
        if end["state"] != "SENT":
            assert end["reason"], f"{name}: {end['state']} without a reason"
    assert terminal_of(outcomes.records, "req/E1")["reason"].startswith("InvalidJob")  # type: ignore[index]


@pytest.mark.kafka
def test_far_future_not_before_is_clamped_to_the_tier_delay(pki: Pki, running: Any) -> None:
    """R-FUZZ-2 (fixed in cd689ef): the due record behind it was never sent."""
    kafka, topics, outcomes, process = running
    cert = pki.topics[0]
    tier = topics.retry(TEST_DELAYS_MS[0])
    produce_raw(kafka, tier, SERDE.encode("PushJob", job(cert, 11, attempt=1)), key=cert,
                headers=[(ATTEMPT_HEADER, b"1"), (NOT_BEFORE_HEADER, str(YEAR_3000_MS).encode())])
    produce_raw(kafka, tier, SERDE.encode("PushJob", job(cert, 12, attempt=1)), key=cert,
                headers=[(ATTEMPT_HEADER, b"1"), (NOT_BEFORE_HEADER, b"0")])
    # The tier's delay is 200 ms: both are due long before this.
    outcomes.wait(lambda rs: terminal_of(rs, "req/E12") is not None, timeout_s=60)
    assert terminal_of(outcomes.records, "req/E11") is not None
    assert process.poll() is None


@pytest.mark.kafka
@pytest.mark.parametrize("running", [Faults(share_500=1.0)], indirect=True)
def test_attempts_out_of_range_are_clamped(pki: Pki, running: Any) -> None:
    """APNs answers 500 to everything: each job ends DEAD_LETTERED after at most
    MAX_ATTEMPTS sends, whatever attempt count its record claims. R-FUZZ-3 (fixed in cd689ef):
    attempt -1000 retried ~1000 times, 2**31-1 overflowed the Avro int."""
    kafka, topics, outcomes, process = running
    cert = pki.topics[0]
    jobs = [job(cert, 1, attempt=-1000), job(cert, 2, attempt=2**31 - 1), job(cert, 3)]
    produce_jobs(kafka, topics.jobs_bulk, jobs, partition=0)
    outcomes.wait(lambda rs: all(terminal_of(rs, j["job_id"]) for j in jobs), timeout_s=90)
    for j in jobs:
        sends = [o for o in outcomes.records if o["job_id"] == j["job_id"]]
        assert len(sends) <= MAX_ATTEMPTS, f"{j['attempt']}: {len(sends)} sends"
        assert terminal_of(sends, j["job_id"])["state"] == "DEAD_LETTERED"  # type: ignore[index]
    assert process.poll() is None
