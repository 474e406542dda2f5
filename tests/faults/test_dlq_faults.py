"""The dead-letter topic deleted while poison records arrive on every consumed topic, in the
middle of a stream of requests, and created again by an operator later. No service may commit
past a poison record it neither processed nor dead-lettered (each one ends in the DLQ once it is
back, put there by every service that reads its topic), none may crash-loop meanwhile, and the
stream's accounting holds, with one dead letter per poison record and reader.

Runs on a private broker that creates no topic on a write (conftest's ``strict_kafka``): on the
session's broker the first dead letter would bring the topic back at once, with one partition
and default settings, and nothing would be tested."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from tests.faults import cases, poison
from tests.faults.conftest import full_only
from tests.faults.harness import assert_met, run_case
from tests.faults.test_record_faults import dead_lettered
from tests.faults.test_service_faults import _build
from tests.pipeline.conftest import PipelineFactory


@pytest.fixture
def kafka_settings(strict_kafka: LocalKafka) -> Iterator[KafkaSettings]:
    """This module's pipelines run on the strict private broker (thrown away at the end)."""
    yield KafkaSettings(bootstrap_servers=strict_kafka.bootstrap,
                        topic_prefix=f"t{uuid.uuid4().hex[:10]}.", linger_ms=1)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(900)
@full_only
def test_the_dead_letter_topic_deleted_while_poison_arrives(
    pipeline_factory: PipelineFactory,
) -> None:
    pipeline, scenario, tracker = _build(pipeline_factory)
    written = cases.Written()
    result = run_case(f"DLQ topic deleted for {cases.DLQ_GONE_S:.0f} s while poison arrives",
                      pipeline, scenario, tracker,
                      cases.dead_letter_topic_deleted(pipeline, written),
                      poison=dead_lettered(pipeline, written))
    assert result.poison == 5  # the fault was met: 4 records, the check-in one read twice
    assert_met(result, pipeline)
    # Held, not lost, and not doubled either: one dead letter per poison record and reader (a
    # held letter was never written; one given back with its input is written by its next
    # reader only).
    found = poison.dead_letters(pipeline.kafka)
    copies = {f"{topic}[{p}]@{o} by {service}": sum(d.service == service
                                                    for d in found.get((topic, p, o), []))
              for (topic, p, o), readers in written.poison.items() for service in readers}
    print(f"dead letters per poison record and reader: {copies}")
    assert set(copies.values()) == {1}, copies
