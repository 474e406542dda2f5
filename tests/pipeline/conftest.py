"""Fixtures for whole-pipeline tests: a fleet scenario behind the simulator, services as
processes, and a tracker of outcomes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.pipeline import Pipeline, PipelineSpec
from services.devstack.tracker import OutcomeTracker
from services.sim.apns.faults import Faults
from services.sim.fleet import KafkaCheckinSink, Scenario, ScenarioSpec, build_scenario
from services.sim.fleet.fleet import FleetParams


def held_topics(spec: ScenarioSpec) -> set[str]:
    """Every push topic the scenario's tenants hold a certificate for."""
    return {t for held in spec.tenants.values()
            for t in ((held,) if isinstance(held, str) else held)}


#: Key of the poison records a test writes on purpose (tests/pipeline/test_monitoring.py): the
#: only undecodable records the teardown forgives in the outcome and alert topics.
OWN_POISON_KEY = "mdmpush-test-own-poison"


PipelineFactory = Callable[..., tuple[Pipeline, Scenario, OutcomeTracker]]


@pytest.fixture
def pipeline_factory(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> Iterator[PipelineFactory]:
    """Build and start scenario + pipeline + tracker; everything is stopped after the test."""
    started: list[tuple[Pipeline, Scenario, OutcomeTracker]] = []

    def build(
        scenario_spec: ScenarioSpec,
        certificates: list[str] | None = None,
        clock: Clock | None = None,
        fleet_params: FleetParams | None = None,
        faults: Faults | None = None,
        **spec: object,
    ) -> tuple[Pipeline, Scenario, OutcomeTracker]:
        clock = clock or Clock()
        scenario = build_scenario(scenario_spec, clock, KafkaCheckinSink(kafka_settings),
                                  fleet_params)
        certs = certificates or sorted(held_topics(scenario_spec))
        pipeline = Pipeline(kafka_settings, clock, tmp_path, PipelineSpec(certs, **spec),  # type: ignore[arg-type]
                            scenario.fleet, faults)
        pipeline.start()
        assert pipeline.sim is not None
        scenario.fleet.attach(pipeline.sim)
        scenario.fleet.start()
        tracker = OutcomeTracker(kafka_settings).start()
        started.append((pipeline, scenario, tracker))
        return pipeline, scenario, tracker

    yield build
    undecodable = 0
    for pipeline, scenario, tracker in started:
        tracker.stop()
        scenario.fleet.stop()
        pipeline.stop()
        undecodable += tracker.undecodable
    # Only the services write the outcome and alert topics the tracker reads: a record there
    # that does not decode is their bug, and the tracker's skipping it must not hide it. The
    # tracker does not keep keys, so when it skipped any, the topics are read again to tell the
    # test's own poison (OWN_POISON_KEY) from a service's.
    if undecodable:
        foreign = services_undecodable(kafka_settings)
        assert foreign == [], f"outcome/alert records that do not decode: {foreign}"


def services_undecodable(kafka: KafkaSettings) -> list[str]:
    """topic[partition]@offset of every undecodable outcome or alert record not keyed
    OWN_POISON_KEY."""
    serde = AvroSerde()
    topics = Topics(kafka.topic_prefix)
    found = []
    for topic in (topics.outcomes, topics.alerts):
        for msg in read_to_end(kafka, topic, timeout_s=60, name="test-undecodable"):
            if msg.key() == OWN_POISON_KEY.encode():
                continue
            try:
                serde.decode(msg.value())
            except DecodeError:
                found.append(f"{topic}[{msg.partition()}]@{msg.offset()}")
    return found
