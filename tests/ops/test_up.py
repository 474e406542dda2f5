"""`mdmpush up --simulate` as an operator runs it: real processes, a push through the gateway,
a SIGKILLed sender restarted by the supervisor, and every push accounted for."""

from __future__ import annotations

import json
import os
import plistlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, wait_for
from services.devstack.tracker import OutcomeTracker
from services.devstack.up.stack import SIMULATED_TOPIC

REPO = Path(__file__).resolve().parents[2]
DEVICES = [f"UP-{uuid.uuid4().hex[:8].upper()}-{i}" for i in range(4)]


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    state: Path
    gateway: str
    api_key: str
    kafka: KafkaSettings

    def status(self) -> dict[str, Any]:
        path = self.state / "status.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def output(self) -> str:
        return (self.state.parent / "up.out").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace")
                                                        .splitlines()[-15:])
                         for p in sorted((self.state / "logs").glob("*.log")))

    def put(self, path: str, body: bytes = b"") -> httpx.Response:
        return httpx.put(f"{self.gateway}{path}", content=body, auth=("nanomdm", self.api_key),
                         timeout=30)


def _plist(**fields: object) -> bytes:
    return plistlib.dumps(fields)


@pytest.fixture
def up(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[Up]:
    prefix = kafka_settings.topic_prefix
    ports = {name: free_port() for name in ("GATEWAY_PORT", "GATEWAY_OPS_PORT",
                                            "FANOUT_METRICS_PORT", "SENDER_METRICS_PORT",
                                            "CORRELATOR_METRICS_PORT")}
    env = {**os.environ, **{f"MDMPUSH_{k}": str(v) for k, v in ports.items()},
           "MDMPUSH_KAFKA_TOPIC_PREFIX": prefix,
           "MDMPUSH_KAFKA_LINGER_MS": "1",
           "MDMPUSH_SENDER_GROUP_ID": f"{prefix}sender",
           "MDMPUSH_CORRELATOR_GROUP_ID": f"{prefix}correlator",
           "MDMPUSH_CORRELATOR_DEADLINE_MS": "60000"}
    state = tmp_path / "up"
    with (tmp_path / "up.out").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "up", "--simulate",
             "--bootstrap", kafka_settings.bootstrap_servers, "--state-dir", str(state),
             "--partitions", "2", "--grace", "20"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    handle = Up(proc, state, f"http://127.0.0.1:{ports['GATEWAY_PORT']}", "", kafka_settings)
    try:
        assert wait_for(lambda: "[up] running:" in handle.output() or proc.poll() is not None,
                        180), handle.output()
        assert proc.poll() is None, handle.output()
        handle.api_key = (state / "credentials" / "api-key").read_text().strip()
        assert wait_for(lambda: _ready(handle), 120, interval_s=0.5), handle.logs()
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ready(up: Up) -> bool:
    try:
        return httpx.get(f"{up.gateway}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _enroll(up: Up) -> None:
    for udid in DEVICES:
        for message in (
            _plist(MessageType="Authenticate", UDID=udid, Topic=SIMULATED_TOPIC),
            _plist(MessageType="TokenUpdate", UDID=udid, Topic=SIMULATED_TOPIC,
                   Token=os.urandom(32), PushMagic=str(uuid.uuid4()).upper()),
        ):
            r = up.put("/checkin", message)
            assert r.status_code == 200, r.text


def _answer_pushes(up: Up, tracker: OutcomeTracker, answered: set[tuple[str, str]]) -> None:
    """Each simulated device checks in (Idle) once its push was SENT, as a device would."""
    for outcome in tracker.snapshot()[0]:
        key = (outcome["request_id"], outcome["enrollment_id"])
        if outcome["state"] == "SENT" and key not in answered:
            answered.add(key)
            r = up.put("/checkin", _plist(Status="Idle", UDID=outcome["enrollment_id"]))
            assert r.status_code == 200, r.text


@pytest.mark.kafka
def test_up_pushes_through_the_gateway_survives_a_killed_sender_and_loses_nothing(
    up: Up,
) -> None:
    _enroll(up)
    assert wait_for(lambda: set(DEVICES) <= load_registry(up.kafka).keys(), 120,
                    interval_s=0.5), up.logs()
    with OutcomeTracker(up.kafka) as tracker:
        r = up.put("/v1/push/" + ",".join(DEVICES))
        assert r.status_code == 202, r.text
        requests = [r.json()["request_id"]]

        sender = up.status()["sender"]
        os.kill(sender["pid"], signal.SIGKILL)   # the crash, right after the request
        assert wait_for(lambda: up.status()["sender"]["restarts"] == 1
                        and up.status()["sender"]["alive"], 60), up.output()
        assert up.status()["sender"]["pid"] != sender["pid"]

        r = up.put("/v1/push/" + ",".join(DEVICES) + "?initiator=admin")
        assert r.status_code == 202, r.text
        requests.append(r.json()["request_id"])

        answered: set[tuple[str, str]] = set()

        def all_accounted() -> bool:
            _answer_pushes(up, tracker, answered)
            return all(len(tracker.accounting(rid).terminal) == len(DEVICES)
                       for rid in requests)

        assert wait_for(all_accounted, 180, interval_s=0.3), up.logs()
        for rid in requests:
            acc = tracker.accounting(rid)
            assert acc.missing(DEVICES) == [] and acc.doubled() == {}
            assert {acc.state_of(d) for d in DEVICES} == {"ANSWERED"}, acc.terminal

    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(90) == 0, up.output()
    status = up.status()
    assert not any(info["alive"] for info in status.values()), status
    assert status["sender"]["exits"][0] == -signal.SIGKILL
    assert "sender exited with signal SIGKILL" in up.output()
    assert "[up] stopped:" in up.output() and "restarts: {'sender': 1}" in up.output()
    for service in ("gateway", "fanout", "sender", "correlator"):
        _assert_json_lines(up.state / "logs" / f"{service}.log", service)


def _assert_json_lines(path: Path, service: str) -> None:
    """One format for every line a service and its libraries wrote (the log file of a
    container), with the fields a log pipeline indexes."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    for line in lines:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not a JSON line: {line[:200]!r}")
        assert {"time", "level", "logger", "message"} <= doc.keys(), (path.name, doc)
        assert doc.get("service") == service, (path.name, doc)
