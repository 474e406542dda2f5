"""A real service process logs JSON lines only, with the fields an operator's pipeline needs,
and no credential it was sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from services.common.principals import DIGEST_PREFIX, api_key_digest
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
API_KEY = "k-" + "7" * 30
TOKEN = "ab" * 32


def _start(module: str, env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", module], cwd=REPO,
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=err)


def _json_lines(path: Path) -> list[dict[str, object]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    docs = []
    for line in lines:
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return docs


@pytest.mark.kafka
def test_gateway_writes_only_json_lines_without_secrets(
    kafka_settings: KafkaSettings, tmp_path: Path,
) -> None:
    port, ops = free_port(), free_port()
    principals = tmp_path / "principals.yaml"
    principals.write_text(yaml.safe_dump({"principals": [{
        "name": "acme", "tenants": ["acme"],
        "api_keys": [DIGEST_PREFIX + api_key_digest(API_KEY).hex()]}]}))
    stderr = tmp_path / "gateway.err"
    proc = _start("services.gateway", {
        "MDMPUSH_LOG_FORMAT": "json", "MDMPUSH_GATEWAY_LOG_LEVEL": "DEBUG",
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "MDMPUSH_GATEWAY_PORT": str(port), "MDMPUSH_GATEWAY_OPS_PORT": str(ops),
        "MDMPUSH_GATEWAY_PRINCIPALS_FILE": str(principals),
    }, stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None
        assert wait_for(healthy, 60, interval_s=0.3) and proc.poll() is None, stderr.read_text()
        # Requests carrying credentials, a token and a signature: none may reach the log.
        httpx.put(f"{base}/v1/push/UDID-1", auth=("nanomdm", API_KEY), timeout=10)
        httpx.put(f"{base}/v1/push/{TOKEN}", auth=("nanomdm", "wrong-" + API_KEY), timeout=10)
        httpx.post(f"{base}/webhook", content=b"{}", timeout=10,
                   headers={"X-Hmac-Signature": "c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw=="})
        httpx.get(f"{base}/no-such-route", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    docs = _json_lines(stderr)
    assert len(docs) >= 2, stderr.read_text()
    for doc in docs:
        assert {"time", "level", "logger", "message", "service"} <= doc.keys(), doc
        assert doc["service"] == "gateway"
    loggers = {str(d["logger"]) for d in docs}
    assert any(name.startswith("services.gateway") for name in loggers), loggers
    assert any(d["level"] == "DEBUG" for d in docs), "MDMPUSH_GATEWAY_LOG_LEVEL not applied"
    text = stderr.read_text()
    for secret in (API_KEY, TOKEN, "c2lnbmF0dXJlLXRoYXQtaXMtbG9uZw=="):
        assert secret not in text


def test_apns_simulator_logs_json_on_stderr_and_keeps_its_ready_line_on_stdout(
    tmp_path: Path,
) -> None:
    stderr, stdout = tmp_path / "sim.err", tmp_path / "sim.out"
    with stderr.open("wb") as err, stdout.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.sim.apns", "--certs", str(tmp_path / "pki"),
             "--log-level", "INFO"],
            cwd=REPO, env={**os.environ, "MDMPUSH_LOG_FORMAT": "json"}, stdout=out, stderr=err)
    try:
        assert wait_for(lambda: "READY" in stdout.read_text() or proc.poll() is not None, 60), \
            stderr.read_text()
        assert proc.poll() is None, stderr.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    docs = _json_lines(stderr)
    assert docs, "the simulator logged nothing at INFO"
    assert all(d["service"] == "apns-simulator" and {"level", "logger", "message"} <= d.keys()
               for d in docs), docs
