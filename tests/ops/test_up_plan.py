"""What `mdmpush up` prepares before anything runs: certificates, credentials, environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from services.common.kafka.logs import client_logger
from services.common.principals import parse_principals
from services.common.settings import KafkaSettings
from services.devstack.up.stack import SIMULATED_TOPIC, Stack, UpError, UpOptions
from services.sim.apns.certs import make_pki


@pytest.fixture
def env(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    monkeypatch.setenv("MDMPUSH_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    for name in ("GATEWAY_PORT", "GATEWAY_OPS_PORT", "SENDER_METRICS_PORT",
                 "CORRELATOR_METRICS_PORT", "FANOUT_METRICS_PORT"):
        monkeypatch.setenv(f"MDMPUSH_{name}", "0")
    return kafka_settings


def _plan(kafka: KafkaSettings, tmp_path: Path, **options: object
          ) -> tuple[list[str], dict[str, dict[str, str]], list[str]]:
    said: list[str] = []
    stack = Stack(UpOptions(state_dir=tmp_path / "up", bootstrap=kafka.bootstrap_servers,
                            partitions=1, **options),  # type: ignore[arg-type]
                  say=said.append)
    specs = stack.plan()
    return [s.name for s in specs], {s.name: dict(s.env) for s in specs}, said


@pytest.mark.kafka
def test_real_apns_uses_the_certificate_directory_and_apples_production_endpoint(
    env: KafkaSettings, tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path / "pki")
    certs = tmp_path / "certs"
    pki.issue("com.apple.mgmt.External.real-one")
    certs.mkdir()
    for suffix in (".pem", ".key"):
        name = f"com.apple.mgmt.External.real-one{suffix}"
        (certs / name).write_bytes((pki.directory / name).read_bytes())
    names, envs, said = _plan(env, tmp_path, certs=certs)
    assert names == ["fanout", "sender", "correlator", "gateway"]
    sender = envs["sender"]
    assert sender["MDMPUSH_SENDER_CERT_DIR"] == str(certs.resolve())
    assert "MDMPUSH_SENDER_BASE_URL" not in sender and "MDMPUSH_SENDER_CA_PATH" not in sender
    assert any("https://api.push.apple.com" in line and "real-one" in line for line in said)


@pytest.mark.kafka
def test_simulation_issues_certificates_and_points_the_sender_at_the_simulator(
    env: KafkaSettings, tmp_path: Path,
) -> None:
    names, envs, _ = _plan(env, tmp_path, simulate=True)
    assert names[0] == "apns-simulator"
    sender = envs["sender"]
    assert sender["MDMPUSH_SENDER_BASE_URL"].startswith("https://127.0.0.1:")
    assert (Path(sender["MDMPUSH_SENDER_CERT_DIR"]) / f"{SIMULATED_TOPIC}.key").is_file()
    assert Path(sender["MDMPUSH_SENDER_CA_PATH"]).is_file()


@pytest.mark.kafka
def test_generated_credentials_are_private_and_hold_only_the_keys_digest(
    env: KafkaSettings, tmp_path: Path,
) -> None:
    _, envs, said = _plan(env, tmp_path, simulate=True)
    creds = tmp_path / "up" / "credentials"
    key = (creds / "api-key").read_text().strip()
    principals = Path(envs["gateway"]["MDMPUSH_GATEWAY_PRINCIPALS_FILE"])
    for path in (creds / "api-key", creds / "webhook-secret", principals):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert key not in principals.read_text()
    loaded = parse_principals(yaml.safe_load(principals.read_text()))
    assert loaded.by_api_key(key.encode()) is not None
    assert any(str(creds / "api-key") in line for line in said)
    # A second run keeps the key: the MDM server configured with it keeps working.
    _plan(env, tmp_path, simulate=True)
    assert (creds / "api-key").read_text().strip() == key


@pytest.mark.kafka
def test_credentials_configured_by_the_caller_are_left_alone(
    env: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MDMPUSH_GATEWAY_API_KEY", "k" * 32)
    _, envs, said = _plan(env, tmp_path, simulate=True)
    assert "MDMPUSH_GATEWAY_PRINCIPALS_FILE" not in envs["gateway"]
    assert not (tmp_path / "up" / "credentials").exists()
    assert any("from your MDMPUSH_GATEWAY_* variables" in line for line in said)


@pytest.mark.kafka
@pytest.mark.parametrize("setup, message", [
    ("missing", "not a directory"),
    ("empty", "no <topic>.pem with its <topic>.key"),
    ("pem-only", "no <topic>.pem with its <topic>.key"),
])
def test_unusable_certificate_directory_is_refused_with_the_reason(
    env: KafkaSettings, tmp_path: Path, setup: str, message: str,
) -> None:
    certs = tmp_path / "certs"
    if setup != "missing":
        certs.mkdir()
    if setup == "pem-only":
        (certs / "com.apple.mgmt.External.x.pem").write_text("cert")
    with pytest.raises(UpError, match=message):
        _plan(env, tmp_path, certs=certs)


@pytest.mark.kafka
def test_busy_port_is_refused_before_anything_starts(
    env: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv("MDMPUSH_GATEWAY_PORT", str(listener.getsockname()[1]))
        with pytest.raises(UpError, match="already in use: gateway port"):
            _plan(env, tmp_path, simulate=True)
    admin = AdminClient(env.admin_config(), logger=client_logger("test"))
    existing = admin.list_topics(timeout=10).topics
    assert not [t for t in existing if t.startswith(env.topic_prefix)], (
        "topics created although up refused to start")
