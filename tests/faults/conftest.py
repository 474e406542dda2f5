"""Fixtures of the fault suite: the whole pipeline as processes (tests/pipeline's factory), a
private broker for the cases that kill or freeze the broker, and the short/full split.

CI runs the cases not marked ``full_only`` (a service SIGKILL, an APNs 5xx storm, the repeat
window's unit tests: about 3 minutes); ``make proof`` sets MDMPUSH_FAULTS=full and runs them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from services.devstack import kafka as devstack_kafka
from services.devstack.kafka import LocalKafka
from services.devstack.procs import free_port
from tests.pipeline.conftest import pipeline_factory

__all__ = ["full_only", "pipeline_factory", "private_kafka", "strict_kafka"]

#: The cases only `make proof` runs (MDMPUSH_FAULTS=full).
full_only = pytest.mark.skipif(os.environ.get("MDMPUSH_FAULTS") != "full",
                               reason="full fault suite: MDMPUSH_FAULTS=full (make proof)")


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A Kafka 2.3.0 broker (and ZooKeeper) of this module's own, on free ports: the broker
    cases kill and freeze it, which the session's shared broker must never see."""
    yield from _private(tmp_path_factory, "private-kafka")


@pytest.fixture(scope="module")
def strict_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A private broker that creates no topic on a write or a metadata request
    (auto.create.topics.enable=false, as production clusters usually are: a typo must not make
    a topic). On the session's broker a deleted topic comes back at the first write to it."""
    def strict(kafka_port: int, zk_port: int, state: Path) -> str:
        return properties(kafka_port, zk_port, state).replace("auto.create.topics.enable=true",
                                         "auto.create.topics.enable=false")
    properties = devstack_kafka._broker_properties
    with mock.patch.object(devstack_kafka, "_broker_properties", strict):
        yield from _private(tmp_path_factory, "strict-kafka")


def _private(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[LocalKafka]:
    state: Path = tmp_path_factory.mktemp(name)
    kafka = LocalKafka(kafka_port=free_port(), zk_port=free_port(), state=state)
    kafka.up(timeout_s=120)
    try:
        yield kafka
    finally:
        kafka.down()
