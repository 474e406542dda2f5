"""The doctor when Kafka or its topics are not there: `sysdiagnose` shows the device's values and
one line saying why the comparison was skipped (exit 3); `device` and `feedback` fail in one line
(exit 2). Within a second or so (a short metadata probe first) instead of a 30 s read timeout,
and none of librdkafka's raw lines.

The Kafka-down cases run the CLI as a real process, because librdkafka writes its raw lines to
the process's stderr from C, where an in-process capture would not see them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli.doctor_cmd import EXIT_SKIPPED
from services.cli.main import main
from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port
from tests.doctor.sysdiag import MAGIC, build_tree, make_tar
from tests.support.samples import TOPIC

REPO = Path(__file__).resolve().parents[2]


def mdmpush_with_kafka_down(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`mdmpush ARGS` as its own process, Kafka pointed at a closed port; returns the run and
    that address."""
    closed = f"127.0.0.1:{free_port()}"  # nothing listens: connections are refused at once
    env = {**os.environ, "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": closed, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "services.cli.main", *args],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return run, closed


def test_kafka_down_shows_the_device_and_one_line(tmp_path: Path) -> None:
    archive = make_tar(build_tree(tmp_path / "src"), tmp_path / "sysdiagnose.tar.gz")
    run, closed = mdmpush_with_kafka_down("doctor", "sysdiagnose", str(archive))
    assert run.returncode == EXIT_SKIPPED == 3, run.stdout + run.stderr
    out = run.stdout
    assert TOPIC in out and MAGIC in out and "token SHA-256 " in out
    skipped = [line for line in out.splitlines() if "skipped" in line]
    assert skipped == [f"comparison with the registry skipped: Kafka at {closed} is unreachable "
                       f"(Connect to ipv4#{closed} failed: Connection refused) "
                       "(--offline skips the attempt)"]
    assert out.index(MAGIC) < out.index("skipped")  # the device first
    assert run.stderr == ""  # no `%3|...|FAIL|` lines, no log lines, no traceback


@pytest.mark.kafka
def test_missing_registry_topic_is_named(kafka_settings: KafkaSettings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Kafka answers, but this test's prefix has no topics (none were created)."""
    monkeypatch.setenv("MDMPUSH_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("MDMPUSH_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    registry = Topics(kafka_settings.topic_prefix).registry
    assert main(["doctor", "sysdiagnose", str(build_tree(tmp_path))]) == EXIT_SKIPPED
    out = capsys.readouterr().out
    assert MAGIC in out
    assert f"comparison with the registry skipped: topic {registry} does not " \
           "exist" in out
    assert "registry: enrollment" not in out


def test_silent_broker_is_waited_for_only_as_long_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listener that never answers (a firewall, a wrong service): no refusal to stop at, so
    the probe gives up after --kafka-timeout and says so."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MDMPUSH_KAFKA_BOOTSTRAP_SERVERS", address)
        code = main(["doctor", "sysdiagnose", str(build_tree(tmp_path)), "--kafka-timeout", "1"])
    assert code == EXIT_SKIPPED
    out = capsys.readouterr().out
    assert MAGIC in out
    assert f"comparison with the registry skipped: Kafka at {address} did not answer within 1 s" \
        in out


@pytest.mark.parametrize("command", ["device", "feedback"])
def test_history_commands_with_kafka_down_fail_in_one_line(command: str) -> None:
    run, closed = mdmpush_with_kafka_down("doctor", command, "E1")
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"mdmpush: error: Kafka at {closed} is unreachable "
        f"(Connect to ipv4#{closed} failed: Connection refused)"]


@pytest.mark.kafka
def test_history_commands_name_a_missing_topic(kafka_settings: KafkaSettings,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MDMPUSH_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("MDMPUSH_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    assert main(["doctor", "device", "E1"]) == 2
    outcomes = Topics(kafka_settings.topic_prefix).outcomes
    assert f"mdmpush: error: topic {outcomes} does not exist" in capsys.readouterr().err
