"""The broker SIGKILLed and restarted, or frozen past the consumers' session timeout, in the
middle of a stream of requests. These cases run on a broker of their own (conftest's
``private_kafka``): the session's shared broker is never killed or stopped. Both are in the
full suite only (MDMPUSH_FAULTS=full, make proof): starting a broker and waiting out its
restart takes several minutes on 2 cores, past CI's budget."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import ScenarioSpec
from tests.faults import cases
from tests.faults.conftest import full_only
from tests.faults.harness import assert_met, run_case
from tests.faults.test_service_faults import DEVICES, ENV, RETRIES
from tests.pipeline.conftest import PipelineFactory


@pytest.fixture
def kafka_settings(private_kafka: LocalKafka, tmp_path: Path) -> Iterator[KafkaSettings]:
    """This module's pipelines run on the private broker (it is thrown away at the end)."""
    yield KafkaSettings(bootstrap_servers=private_kafka.bootstrap,
                        topic_prefix=f"t{uuid.uuid4().hex[:10]}.", linger_ms=1)


def _case(pipeline_factory: PipelineFactory, name: str, fault: cases.Fault) -> None:
    spec = ScenarioSpec(devices=DEVICES, tenants={"acme": mdm_topic()}, seed=5)
    pipeline, scenario, tracker = pipeline_factory(spec, senders=2, env=ENV,
                                                   retry_delays_ms=RETRIES)
    result = run_case(name, pipeline, scenario, tracker, fault, restarts_allowed=True)
    assert_met(result, pipeline)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(900)
@full_only
def test_the_broker_killed_and_restarted_mid_run(
    pipeline_factory: PipelineFactory, private_kafka: LocalKafka,
) -> None:
    _case(pipeline_factory, f"broker SIGKILL, down {cases.BROKER_DOWN_S:.0f} s",
          cases.kill_broker(private_kafka))


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(900)
@full_only
def test_the_broker_frozen_past_the_session_timeout_mid_run(
    pipeline_factory: PipelineFactory, private_kafka: LocalKafka,
) -> None:
    _case(pipeline_factory, f"broker SIGSTOP {cases.FREEZE_S:.0f} s",
          cases.freeze_broker(private_kafka))
