"""/livez and /readyz of the fan-out, the sender and the correlator (deploy/k8s/base probes them).

The staleness of the heartbeat is checked with an injected clock: a stopped process cannot answer
at all, so a real wedge cannot be shown through HTTP. The readiness path is checked on the real
processes: 503 with a reason while they join Kafka, 200 once they hold partitions, then a clean
exit on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.catalogue import Topics
from services.common.ops_server import Heartbeat, OpsServer
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, wait_for
from services.sender.settings import SenderSettings
from tests.support.sender_harness import create_retry_topics

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Monotonic seconds moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, dict[str, object] | str]:
    """Status and body (JSON when it is) of GET `path`; None when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, raw = refused.code, refused.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def test_heartbeat_goes_stale_only_past_its_limit() -> None:
    clock = FakeClock()
    beat = Heartbeat(30.0, clock)
    clock.now += 30.0
    assert beat.stale() is None
    clock.now += 0.5
    reason = beat.stale()
    assert reason is not None and "30.5" in reason
    beat.beat()
    assert beat.stale() is None


@pytest.fixture
def ops() -> Iterator[tuple[OpsServer, FakeClock, list[str | None]]]:
    clock = FakeClock()
    verdict: list[str | None] = ["no partitions assigned yet"]
    server = OpsServer(0, Heartbeat(10.0, clock), lambda: verdict[0], host="127.0.0.1").start()
    yield server, clock, verdict
    server.close()


def test_ops_server_answers_from_the_heartbeat_and_the_check(
    ops: tuple[OpsServer, FakeClock, list[str | None]],
) -> None:
    server, clock, verdict = ops
    assert get(server.port, "/livez") == (200, {"ok": True})
    assert get(server.port, "/readyz") == (503, {"ok": False,
                                                 "reason": "no partitions assigned yet"})
    verdict[0] = None
    assert get(server.port, "/readyz") == (200, {"ok": True})
    clock.now += 11.0
    status, body = get(server.port, "/livez")
    assert status == 503 and isinstance(body, dict) and "silent for 11.0 s" in str(body["reason"])
    status, metrics = get(server.port, "/metrics")
    assert status == 200 and "python_info" in str(metrics)
    assert get(server.port, "/nowhere")[0] == 404


def test_a_failing_check_reads_not_ready_never_500() -> None:
    def broken() -> str | None:
        raise RuntimeError("consumer gone")

    server = OpsServer(0, Heartbeat(10.0), broken, host="127.0.0.1").start()
    try:
        status, body = get(server.port, "/readyz")
    finally:
        server.close()
    assert status == 503 and isinstance(body, dict) and "consumer gone" in str(body["reason"])


def service_env(service: str, port: int, kafka: KafkaSettings, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        f"MDMPUSH_{service.upper()}_METRICS_PORT": str(port),
    })
    if service == "sender":
        env.update({"MDMPUSH_SENDER_CERT_DIR": str(tmp_path),
                    "MDMPUSH_SENDER_GROUP_ID": f"{kafka.topic_prefix}sender"})
    elif service == "correlator":
        env["MDMPUSH_CORRELATOR_GROUP_ID"] = f"{kafka.topic_prefix}correlator"
    else:
        env["MDMPUSH_FANOUT_DATA_DIR"] = str(tmp_path / "fanout")
    return env


@pytest.mark.kafka
@pytest.mark.parametrize("service", ["fanout", "sender", "correlator"])
def test_service_turns_ready_once_it_holds_partitions_and_stops_on_sigterm(
    service: str, kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path,
) -> None:
    if service == "sender":
        create_retry_topics(kafka_settings, SenderSettings(cert_dir=tmp_path).retry_delays_ms)
    port = free_port()
    log = tmp_path / f"{service}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT,
                                env=service_env(service, port, kafka_settings, tmp_path),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        answers: list[tuple[int, dict[str, object] | str]] = []

        def ready() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                answers.append(get(port, "/readyz"))
            except OSError:  # the port is not open yet
                return False
            return answers[-1][0] == 200

        assert wait_for(ready, 180, 0.05), (answers[-3:], log.read_text(errors="replace")[-3000:])
        status, first = answers[0]
        # The ops port opens before the Kafka clients join: the first answer is a refusal.
        assert status == 503 and isinstance(first, dict) and first["reason"], answers[:3]
        assert answers[-1][1] == {"ok": True}
        assert get(port, "/livez") == (200, {"ok": True})
        assert get(port, "/metrics")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("service", ["fanout", "sender", "correlator"])
def test_help_lists_the_settings_without_touching_kafka(service: str) -> None:
    # A bootstrap nothing listens on: a service that tried to reach Kafka would hang or fail.
    env = {**os.environ, "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", f"services.{service}", "--help"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    for variable in (f"MDMPUSH_{service.upper()}_METRICS_PORT", "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS",
                     "MDMPUSH_OPS_LIVENESS_STALE_S"):
        assert variable in result.stdout
