"""The gateway SIGKILLed or frozen while an MDM server queues its pushes through the push API
(NanoMDM's PUT /v1/push/{ids}). The client retries a call that failed or timed out, as NanoMDM's
caller would: a call whose request landed before the fault is then queued twice (the push API
has no idempotency key), which shows as `resubmitted` and, if both reach a device, as two jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.devstack.pipeline import Pipeline
from services.devstack.procs import free_port, wait_for
from services.devstack.service_process import ServiceProcess
from services.devstack.tracker import OutcomeTracker
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Scenario, ScenarioSpec
from tests.faults import cases
from tests.faults.conftest import full_only
from tests.faults.harness import Submit, assert_met, run_case
from tests.faults.test_service_faults import DEVICES, ENV, RETRIES
from tests.pipeline.conftest import PipelineFactory

API_KEY = "faults-suite-api-key-0123456789"
Built = tuple[Pipeline, Scenario, OutcomeTracker]


def gateway_process(pipeline: Pipeline, log_dir: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": pipeline.kafka.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": pipeline.kafka.topic_prefix,
        "MDMPUSH_GATEWAY_PORT": str(port), "MDMPUSH_GATEWAY_OPS_PORT": str(free_port()),
        "MDMPUSH_GATEWAY_API_KEY": API_KEY, "MDMPUSH_GATEWAY_DEFAULT_TENANT": "acme",
        "MDMPUSH_GATEWAY_RATE_PER_S": "1000", "MDMPUSH_GATEWAY_RATE_BURST": "1000",
    }
    return ServiceProcess("gateway", "services.gateway", env, log_dir), f"http://127.0.0.1:{port}"


def http_submit(base: str) -> Submit:
    client = httpx.Client(base_url=base, auth=("nanomdm", API_KEY), timeout=5.0)

    def submit(ids: list[str]) -> str:
        answer = client.put(f"/v1/push/{','.join(ids)}", params={"initiator": "admin"})
        if answer.status_code >= 500:
            raise httpx.HTTPStatusError("gateway error", request=answer.request,
                                        response=answer)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["request_id"])
    return submit


@pytest.fixture
def gateway_pipeline(pipeline_factory: PipelineFactory, tmp_path: Path
                     ) -> Iterator[tuple[Built, ServiceProcess, str]]:
    spec = ScenarioSpec(devices=DEVICES, tenants={"acme": mdm_topic()}, seed=5)
    built = pipeline_factory(spec, senders=2, env=ENV, retry_delays_ms=RETRIES)
    gateway, base = gateway_process(built[0], tmp_path / "logs")
    gateway.start()
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_for(healthy, 60, interval_s=0.3), gateway.log_tail()
        yield built, gateway, base
    finally:
        gateway.terminate()


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
@full_only
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_the_gateway_killed_or_frozen_mid_run(
    gateway_pipeline: tuple[Built, ServiceProcess, str], how: str,
) -> None:
    (pipeline, scenario, tracker), gateway, base = gateway_pipeline
    make = cases.kill_service if how == "kill" else cases.freeze_service
    result = run_case(f"gateway {how}", pipeline, scenario, tracker,
                      make(lambda: gateway), submit=http_submit(base),
                      extra_processes=lambda: [gateway])
    assert_met(result, pipeline)
    assert gateway.alive
