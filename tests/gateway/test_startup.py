"""`python -m services.gateway` as a real process: refuses to start open or with weak secrets."""

from __future__ import annotations

import base64
import json
import os
import plistlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.common.catalogue import Topics
from services.common.principals import hmac_signature
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, port_open, wait_for
from tests.gateway.harness import (
    ACME_KEY,
    ACME_SECRET,
    DEVICE_PLISTS,
    GLOBEX_SECRET,
    PRINCIPALS,
    basic,
    count_records,
)

REPO = Path(__file__).resolve().parents[2]


def _env(kafka: KafkaSettings, log_level: str = "INFO", **gateway: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDMPUSH_GATEWAY_")}
    env.update({"MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix, "MDMPUSH_LOG_FORMAT": "text"})
    env.update({f"MDMPUSH_GATEWAY_{k.upper()}": v for k, v in gateway.items()})
    env["MDMPUSH_LOG_LEVEL"] = log_level
    return env


def _refusal(kafka: KafkaSettings, **gateway: str) -> str:
    """Run the gateway expecting it to refuse to start; returns what it logged."""
    done = subprocess.run([sys.executable, "-m", "services.gateway"], cwd=REPO,
                          env=_env(kafka, port=str(free_port()), ops_port=str(free_port()),
                                   **gateway),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    return done.stderr


@pytest.mark.kafka
@pytest.mark.parametrize(("gateway", "reason"), [
    ({}, "no credentials configured"),
    ({"api_key": ""}, "empty or short"),
    ({"api_key": "fifteen-chars.."}, "empty or short"),
    ({"webhook_secret": "   "}, "empty or short"),
    ({"principals": '{"principals": [{"name": "a", "tenants": ["t"], "api_keys": [""]}]}'},
     "empty or short"),
    ({"principals_file": "/nonexistent/principals.yaml"}, "cannot read"),
    ({"tls_cert_file": "/nonexistent/cert.pem", "api_key": ACME_KEY}, "TLS needs both"),
])
def test_refuses_to_start(kafka_settings: KafkaSettings, gateway: dict[str, str],
                          reason: str) -> None:
    logged = _refusal(kafka_settings, **gateway)
    assert reason in logged and "gateway not started" in logged
    assert ACME_KEY not in logged


@contextmanager
def _gateway_process(kafka: KafkaSettings, log: Path, **gateway: str) -> Iterator[str]:
    port, ops = free_port(), free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=REPO,
                                env=_env(kafka, port=str(port), ops_port=str(ops), **gateway),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: port_open("127.0.0.1", port) or proc.poll() is not None, 60), \
            log.read_text()
        assert proc.poll() is None, log.read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.kafka
def test_a_credentialed_gateway_logs_each_request_and_no_secret(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    """Started from a mounted credentials file, at DEBUG: one access line per request, and
    nothing of the keys, secrets, signatures, device tokens or PushMagic in the whole log."""
    path = tmp_path / "principals.json"
    path.write_text(json.dumps(PRINCIPALS))
    token_update = (DEVICE_PLISTS / "TokenUpdate.2.plist").read_bytes()
    message = plistlib.loads(token_update)
    event = json.dumps({"checkin_event": {
        "raw_payload": base64.b64encode(token_update).decode()}}).encode()
    signature = hmac_signature(event, ACME_SECRET.encode())
    with _gateway_process(kafka_settings, tmp_path / "gw.log", principals_file=str(path),
                          log_level="DEBUG") as url:
        assert httpx.get(url + "/v1/push/A", timeout=30).status_code == 401
        ok = httpx.get(url + "/v1/push/A", headers=basic(ACME_KEY), timeout=30)
        assert ok.status_code == 202, ok.text
        assert httpx.put(url + "/checkin", content=token_update, headers=basic(ACME_KEY),
                         timeout=30).status_code == 200
        assert httpx.post(url + "/webhook", content=event, headers={
            "X-Hmac-Signature": signature}, timeout=30).status_code == 200
        assert httpx.post(url + "/webhook?tenant=globex", content=event, headers={
            "X-Hmac-Signature": signature}, timeout=30).status_code == 403
    logged = (tmp_path / "gw.log").read_text()
    assert "INSECURE" not in logged
    assert "principal=acme-mdm" in logged and f"request_id={ok.json()['request_id']}" in logged
    assert logged.count(" -> ") == 5, logged  # one access line per request
    for secret in (ACME_KEY, ACME_SECRET, GLOBEX_SECRET, signature, basic(ACME_KEY)[
            "Authorization"].split()[1], message["Token"].hex(), message["PushMagic"]):
        assert secret not in logged
    assert count_records(kafka_settings, topics.requests) == 1
    assert count_records(kafka_settings, topics.checkins) == 2


@pytest.mark.kafka
def test_insecure_dev_flag_runs_open_and_says_so(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    with _gateway_process(kafka_settings, tmp_path / "gw.log", insecure_dev="1") as url:
        r = httpx.get(url + "/v1/push/A?tenant=acme", timeout=30)
        assert r.status_code == 202, r.text
    assert "INSECURE: MDMPUSH_GATEWAY_INSECURE_DEV is set" in (tmp_path / "gw.log").read_text()
    assert count_records(kafka_settings, topics.requests) == 1
