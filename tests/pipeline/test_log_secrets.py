"""No secret reaches a log: every service's log of an end-to-end run, scanned for what that run
used — device tokens (hex and base64), PushMagic values, the API key, the webhook HMAC secret, a
wrong key an attacker presented, and the private keys of the push certificates and the CA.

The gateway, fan-out, sender and correlator run as real processes at DEBUG level (the level
that leaks first). The run goes through the door as an MDM server would: TokenUpdates by
``PUT /checkin`` and by the signed webhook, the push request by the push API; refused requests
(wrong key, wrong signature, a malformed check-in) exercise the error paths too. The fleet's
devices answer through the simulator, so the correlator sees check-ins, verdicts and diagnoses
(a stale PushMagic, a restored token) for the same devices.
"""

from __future__ import annotations

import base64
import json
import plistlib
import re
import secrets
from pathlib import Path

import httpx
import pytest

from services.common.principals import hmac_signature
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, port_open, wait_for
from services.devstack.service_process import ServiceProcess
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, ScenarioSpec, SimDevice
from tests.pipeline.conftest import PipelineFactory
from tests.support.correlator_grace import GRACE_MS

INTEROP = Path(__file__).resolve().parents[1] / "interop" / "nanomdm"
TOKEN_UPDATE = INTEROP / "mdm" / "testdata" / "TokenUpdate.1.plist"
WEBHOOK_EVENT = INTEROP / "service" / "webhook" / "testdata" / "Authenticate.2.json"
DEBUG = {"MDMPUSH_LOG_LEVEL": "DEBUG"}
#: Longest wait for an event: a fail-safe returned from as soon as it happens, not a bound.
WAIT_S = 180.0


def token_update_plist(device: SimDevice, magic: str, token_hex: str) -> bytes:
    """NanoMDM's TokenUpdate sample with this device's identity, token and PushMagic."""
    message = plistlib.loads(TOKEN_UPDATE.read_bytes())
    message.update(UDID=device.udid, Topic=device.topic, PushMagic=magic,
                   Token=bytes.fromhex(token_hex))
    return plistlib.dumps(message)


def webhook_body(plist: bytes, udid: str) -> bytes:
    """NanoMDM's webhook envelope around a raw check-in."""
    event = json.loads(WEBHOOK_EVENT.read_text())
    event["topic"] = "mdm.TokenUpdate"
    event["checkin_event"].update(raw_payload=base64.b64encode(plist).decode(), udid=udid,
                                  ids={"id": udid, "type": "Device"})
    return json.dumps(event).encode()


def private_key_lines(directory: Path) -> dict[str, str]:
    """Every base64 line of every PEM private key under ``directory`` (a leaked key shows up as
    at least one whole line of its body)."""
    found: dict[str, str] = {}
    for path in sorted(directory.rglob("*.key")):
        body = [line for line in path.read_text().splitlines()
                if line and not line.startswith("-----")]
        for i, line in enumerate(body):
            if len(line) >= 32:  # the last line may be short, and short strings match by chance
                found[f"private key {path.name} line {i}"] = line
    return found


def find_secrets(logs: dict[str, str], needles: dict[str, str]) -> list[str]:
    """"<what> in <log>" for each needle found (case-insensitive for hex)."""
    hits = []
    for what, needle in needles.items():
        pattern = re.compile(re.escape(needle), re.IGNORECASE if _is_hex(needle) else 0)
        hits += [f"{what} in {name}" for name, text in logs.items() if pattern.search(text)]
    return hits


def _is_hex(value: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]+", value) is not None


@pytest.mark.kafka
def test_no_token_magic_key_or_secret_in_any_service_log(
    pipeline_factory: PipelineFactory, kafka_settings: KafkaSettings, tmp_path: Path,
) -> None:
    api_key = "honest-key-" + secrets.token_hex(16)
    webhook_secret = "honest-hmac-" + secrets.token_hex(16)
    wrong_key = "wrong-key-" + secrets.token_hex(16)
    principals = {"principals": [{"name": "acme-mdm", "tenants": ["acme"],
                                  "api_keys": [api_key], "webhook_secrets": [webhook_secret]}]}
    topic = mdm_topic()
    spec = ScenarioSpec(devices=8, tenants={"acme": topic}, seed=13,
                        shares={Cause.HEALTHY: 5.0, Cause.STALE_MAGIC: 2.0,
                                Cause.RESTORED_TOKEN: 1.0})
    pipeline, scenario, tracker = pipeline_factory(
        spec, env={"fanout": DEBUG, "sender": DEBUG,
                   "correlator": {**DEBUG, "MDMPUSH_CORRELATOR_DEADLINE_MS": "15000",
                                  "MDMPUSH_CORRELATOR_CHECKIN_GRACE_MS": GRACE_MS}})
    api_port = free_port()
    gateway = ServiceProcess("gateway", "services.gateway", {
        **DEBUG,
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "MDMPUSH_GATEWAY_PORT": str(api_port),
        "MDMPUSH_GATEWAY_OPS_PORT": str(free_port()),
        "MDMPUSH_GATEWAY_PRINCIPALS": json.dumps(principals),
    }, tmp_path / "logs")
    gateway.start()
    try:
        assert wait_for(lambda: port_open("127.0.0.1", api_port), 60), gateway.log_tail()
        scenario.enroll_all()
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            for device in scenario.devices:
                e = device.enrollment
                plist = token_update_plist(device, e.push_magic, e.token_hex)
                r = client.put("/checkin", content=plist, auth=("nanomdm", api_key))
                assert r.status_code == 200, r.text
                body = webhook_body(plist, device.udid)
                r = client.post("/webhook", content=body,
                                headers={"X-Hmac-Signature": hmac_signature(
                                    body, webhook_secret.encode())})
                assert r.status_code == 200, r.text
            # Refused at the door, each on its own error path.
            device = scenario.devices[0]
            plist = token_update_plist(device, device.enrollment.push_magic,
                                       device.enrollment.token_hex)
            assert client.put("/checkin", content=plist,
                              auth=("nanomdm", wrong_key)).status_code == 401
            assert client.post("/webhook", content=webhook_body(plist, device.udid),
                               headers={"X-Hmac-Signature": hmac_signature(
                                   plist, wrong_key.encode())}).status_code == 401
            assert client.put("/checkin", content=plist[:-40],
                              auth=("nanomdm", api_key)).status_code == 400
            # The servers' records (the stale ones for STALE_MAGIC: wrong magic, then healing
            # diagnoses), pushed through the push API.
            targets = sorted({t.enrollment_id for t in scenario.truth})
            assert pipeline.wait_registry(targets), pipeline.logs()
            r = client.get("/v1/push/" + ",".join(targets), auth=("nanomdm", api_key))
            assert r.status_code in (200, 202), r.text
            request_id = r.json()["request_id"]
        assert tracker.wait_terminal(request_id, len(targets), WAIT_S), pipeline.logs()
    finally:
        gateway.terminate()
        pipeline.stop()

    logs = {p.name: p.read_text(errors="replace") for p in sorted((tmp_path / "logs").glob("*"))}
    assert {"gateway.log", "fanout.log", "sender-0.log", "correlator.log"} <= logs.keys()
    assert all(logs.values()), [name for name, text in logs.items() if not text]

    needles = {"API key": api_key, "webhook secret": webhook_secret, "wrong key": wrong_key}
    for device in scenario.devices:
        enrollments = [device.enrollment]
        if device.stale_enrollment is not None:
            enrollments.append(device.stale_enrollment)
        for e in enrollments:
            needles[f"PushMagic of {e.enrollment_id}"] = e.push_magic
            needles[f"token of {e.enrollment_id}"] = e.token_hex
            needles[f"token (base64) of {e.enrollment_id}"] = base64.b64encode(
                bytes.fromhex(e.token_hex)).decode()
        needles[f"device token of {device.udid}"] = device.token_hex
    assert pipeline.pki is not None
    needles.update(private_key_lines(pipeline.pki.directory))
    needles.update(private_key_lines(tmp_path / "certs"))
    assert any(k.startswith("private key") for k in needles)  # the scan does look for keys

    # The scan reads what the services wrote: the (public) names they do log are found.
    control = find_secrets(logs, {"topic prefix": kafka_settings.topic_prefix})
    assert len(control) >= 2, ({n: len(t) for n, t in logs.items()}, control)
    assert find_secrets(logs, needles) == []
