"""Fixtures of the sender's tests: two push certificates, the simulator, retry tiers, outcomes,
and a small bulk backlog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.sim.apns.faults import Faults
from services.sim.apns.server import SimulatorThread
from tests.support.sender_harness import (
    Pki,
    Reader,
    create_retry_topics,
    job,
    make_certs,
    produce_jobs,
    start_sim,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_certs(tmp_path, 2)


@pytest.fixture
def sim(pki: Pki) -> Iterator[SimulatorThread]:
    with start_sim(pki, faults=Faults()) as handle:
        yield handle


@pytest.fixture
def retry_ready(kafka_settings: KafkaSettings, topics: Topics) -> Topics:
    create_retry_topics(kafka_settings)
    return topics


@pytest.fixture
def outcomes(kafka_settings: KafkaSettings, retry_ready: Topics) -> Iterator[Reader]:
    reader = Reader(kafka_settings, retry_ready.outcomes)
    yield reader
    reader.close()


@pytest.fixture
def bulk_jobs(kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki) -> list[dict]:
    """Ten jobs of the first certificate, waiting on the bulk lane before the sender starts: the
    load a test puts through an injected fault and back out of it."""
    jobs = [job(pki.topics[0], i) for i in range(10)]
    produce_jobs(kafka_settings, retry_ready.jobs_bulk, jobs)
    return jobs
