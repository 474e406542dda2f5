"""The dashboards and alert rules against a real Prometheus scraping the real services.

A small fleet with every kind of event the panels show (answers, silent devices, a wrong topic,
checked-out devices, the enrollment race, APNs 503s and retries, a throttled certificate, poison
records for every consumer, gateway requests) runs through the pipeline while Prometheus scrapes
the gateway, fan-out, sender and correlator every second. Then every dashboard query must return
data and every alert rule must evaluate cleanly — the dead-letter alert must fire, and a real
Alertmanager must deliver it to a webhook receiver on loopback, as it would page an operator.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.common.clock import Clock
from services.common.settings import KafkaSettings
from services.devstack.alertmanager import LocalAlertmanager
from services.devstack.procs import free_port, port_open, wait_for
from services.devstack.prometheus import LocalPrometheus
from services.devstack.scenario_run import run_accuracy
from services.devstack.service_process import ServiceProcess
from services.monitoring.dashboards import DASHBOARDS
from services.monitoring.rules import ALERTS_FILE, load_groups
from services.sdk.policy import PolicyPublisher, PushPolicy
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from services.sim.apns.faults import Faults
from services.sim.fleet import Cause, ScenarioSpec
from services.sim.fleet.fleet import FleetParams
from tests.pipeline.conftest import OWN_POISON_KEY, PipelineFactory
from tests.support.correlator_grace import GRACE_MS
from tests.support.sender_harness import produce_raw

RACE_MS = 3000  # as in test_diagnoses.py
POISON = b"\x00not an avro record"
NEVER_EVALUATED = "0001-01-01T00:00:00Z"


class WebhookReceiver:
    """Alertmanager's webhook target: records every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reports what it received."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def firing(self) -> dict[str, dict[str, Any]]:
        """alertname → the last alert delivered firing under that name."""
        return {a["labels"]["alertname"]: a for n in self.notifications for a in n["alerts"]
                if a["status"] == "firing"}

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def gateway_requests(port: int) -> None:
    """One accepted and one refused request, so the gateway's counter has both kinds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as ok:
        assert ok.status == 200
    bad = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=b"not json",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=5)
    assert refused.value.code == 400


@pytest.mark.kafka
def test_every_dashboard_query_has_data_and_every_alert_rule_evaluates(
    pipeline_factory: PipelineFactory, kafka_settings: KafkaSettings, tmp_path: Path,
    webhook: WebhookReceiver,
) -> None:
    # Ops ports (/metrics); the gateway's public API is on a port of its own.
    ports = {name: free_port() for name in ("sender", "correlator", "fanout", "gateway")}
    api_port = free_port()
    cert = mdm_topic()
    shares = {Cause.HEALTHY: 3.0, Cause.OFFLINE: 1.0, Cause.WRONG_TOPIC: 1.0,
              Cause.UNENROLLED_CHECKOUT: 1.0, Cause.ENROLLMENT_RACE: 1.0}
    spec = ScenarioSpec(devices=42, tenants={"acme": cert}, shares=shares, seed=9)
    pipeline, scenario, tracker = pipeline_factory(
        spec, clock=Clock(), fleet_params=FleetParams(race_window_ms=RACE_MS),
        faults=Faults(share_503=0.1, seed=2), retry_delays_ms=(300, 1000, 2000),
        env={"sender": {"MDMPUSH_SENDER_METRICS_PORT": str(ports["sender"]),
                        "MDMPUSH_SENDER_DEFAULT_MAX_ATTEMPTS": "8"},
             "fanout": {"MDMPUSH_FANOUT_METRICS_PORT": str(ports["fanout"])},
             "correlator": {"MDMPUSH_CORRELATOR_METRICS_PORT": str(ports["correlator"]),
                            "MDMPUSH_CORRELATOR_DEADLINE_MS": "15000",
                            "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS,
                            "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": "5000",
                            "MDMPUSH_CORRELATOR_RACE_ENROLLMENT_MS": str(RACE_MS + 2000)}},
    )
    gateway = ServiceProcess("gateway", "services.gateway", {
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "MDMPUSH_GATEWAY_PORT": str(api_port),
        "MDMPUSH_GATEWAY_OPS_PORT": str(ports["gateway"]),
        "MDMPUSH_GATEWAY_INSECURE_DEV": "1",
    }, tmp_path / "logs")
    gateway.start()
    alertmanager = LocalAlertmanager(tmp_path / "alertmanager", webhook.url)
    prometheus: LocalPrometheus | None = None
    try:
        alertmanager.start()
        # Job names as the PodMonitor's jobLabel gives them in a cluster (alerts select on them).
        prometheus = LocalPrometheus(
            tmp_path / "prometheus",
            {f"mdmpush-{name}": [f"127.0.0.1:{port}"] for name, port in ports.items()},
            rule_files=[ALERTS_FILE], alertmanagers=[alertmanager.address],
        ).start()
        assert wait_for(lambda: port_open("127.0.0.1", api_port), 30), gateway.log_tail()

        def all_up() -> bool:
            up = prometheus.targets_up()
            return len(up) == len(ports) and all(up.values())

        # Scraped once before anything happens: the counters' first samples are the zeros.
        assert wait_for(all_up, 30, interval_s=0.5), prometheus.targets_up()
        gateway_requests(api_port)
        topics = pipeline.topics
        # Keyed as the test's own: the fixture's check for undecodable outcomes forgives only it.
        for topic in (topics.jobs_bulk, topics.checkins, topics.outcomes):
            produce_raw(kafka_settings, topic, POISON, key=OWN_POISON_KEY)

        result = run_accuracy(pipeline, scenario, tracker, timeout_s=90)
        assert result.missing == [], pipeline.logs()
        # A throttled certificate: the next request's jobs wait for the bucket.
        PolicyPublisher(kafka_settings).set(PushPolicy(cert, bulk_per_minute=60.0))
        healthy = [d.enrollment_id for d in scenario.truth if d.cause is Cause.HEALTHY]
        PushPublisher(kafka_settings).publish(PushRequest(tenant="acme", enrollment_ids=healthy))

        queries = [q for board in DASHBOARDS for q in board.queries()]

        def empty() -> list[str]:
            return [q for q in queries if not prometheus.query(q)]

        assert wait_for(lambda: not empty(), 60, interval_s=1.0), (
            f"queries without data: {empty()}\n{prometheus.targets_up()}\n{pipeline.logs()}")
        assert all_up(), prometheus.targets_up()

        def rule_states() -> dict[str, str]:
            return {r["name"]: r["state"] for r in prometheus.rules()
                    if r["lastEvaluation"] != NEVER_EVALUATED}

        expected = {"MdmpushDeadLetters": "firing", "MdmpushWrongTopic": "firing",
                    "MdmpushCertificateBreakerOpen": "inactive", "MdmpushServiceDown": "inactive",
                    "MdmpushServiceAbsent": "inactive", "MdmpushGatewayErrors": "inactive"}
        assert wait_for(lambda: expected.items() <= rule_states().items(), 30, interval_s=1.0), \
            rule_states()
        rules = prometheus.rules()
        count = sum(len(group["rules"]) for group in load_groups())
        assert len(rules) == count and len(rule_states()) == count
        assert {r["name"]: r["lastError"] for r in rules if r["health"] != "ok"} == {}

        # Prometheus → Alertmanager → the webhook: the page an operator would get.
        assert wait_for(lambda: "MdmpushDeadLetters" in webhook.firing(), 60, interval_s=0.5), (
            f"delivered: {webhook.notifications}\nheld: {alertmanager.alerts()}\n"
            f"{alertmanager.log_tail()}")
        page = webhook.firing()["MdmpushDeadLetters"]
        assert page["labels"]["severity"] == "warning"
        assert page["annotations"]["runbook_url"].endswith("docs/runbooks.md#mdmpushdeadletters")
        assert page["annotations"]["summary"] and page["annotations"]["description"]
        assert "MdmpushCertificateBreakerOpen" not in webhook.firing()
    finally:
        if prometheus is not None:
            prometheus.stop()
        alertmanager.stop()
        gateway.terminate()
