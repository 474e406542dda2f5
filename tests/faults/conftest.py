"""Fixtures of the fault suite: the whole pipeline as processes (tests/pipeline's factory), a
private broker for the cases that kill or freeze the broker, and the short/full split.

CI runs the cases not marked ``full_only`` (a service SIGKILL, an APNs 5xx storm, the repeat
window's unit tests: about 3 minutes); ``make proof`` sets MDMPUSH_FAULTS=full and runs them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.devstack.kafka import LocalKafka
from services.devstack.procs import free_port
from tests.pipeline.conftest import pipeline_factory

__all__ = ["full_only", "pipeline_factory", "private_kafka"]

#: The cases only `make proof` runs (MDMPUSH_FAULTS=full).
full_only = pytest.mark.skipif(os.environ.get("MDMPUSH_FAULTS") != "full",
                               reason="full fault suite: MDMPUSH_FAULTS=full (make proof)")


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A Kafka 2.3.0 broker (and ZooKeeper) of this module's own, on free ports: the broker
    cases kill and freeze it, which the session's shared broker must never see."""
    state: Path = tmp_path_factory.mktemp("private-kafka")
    kafka = LocalKafka(kafka_port=free_port(), zk_port=free_port(), state=state)
    kafka.up(timeout_s=120)
    try:
        yield kafka
    finally:
        kafka.down()
