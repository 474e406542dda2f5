"""Every file of NanoMDM's interop corpus (tests/interop, vendored) is ingested correctly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from services.gateway.checkin_parse import BadCheckin, checkin_event, parse_plist
from services.gateway.webhook import event_to_checkin

INTEROP = Path(__file__).resolve().parents[1] / "interop" / "nanomdm"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"

PLISTS = {
    "Authenticate.1.plist": ("AUTHENTICATE", "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"),
    "Authenticate.2.plist": ("AUTHENTICATE", "66ADE930-5FDF-5EC4-8429-15640684C489"),
    "TokenUpdate.1.plist": ("TOKEN_UPDATE", "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"),
    "TokenUpdate.2.plist": ("TOKEN_UPDATE", "66ADE930-5FDF-5EC4-8429-15640684C489"),
    "DeviceInformation.1.plist": ("COMMAND_REPORT", "66ADE930-5FDF-5EC4-8429-15640684C489"),
}


def test_corpus_is_complete() -> None:
    """A new file in the corpus must get an expectation here."""
    assert sorted(p.name for p in (INTEROP / "mdm" / "testdata").glob("*.plist")) == sorted(
        PLISTS)


@pytest.mark.parametrize("name", sorted(PLISTS))
def test_device_plists(name: str) -> None:
    message = parse_plist((INTEROP / "mdm" / "testdata" / name).read_bytes())
    record = checkin_event(message, 1000, tenant="acme")
    assert (record["message_type"], record["enrollment_id"]) == PLISTS[name]
    assert record["udid"] == PLISTS[name][1]
    if record["message_type"] != "COMMAND_REPORT":
        assert record["topic"] == TOPIC
    if record["message_type"] == "TOKEN_UPDATE":
        assert len(record["token_hex"]) == 64
        assert record["push_magic"] == message["PushMagic"]
    assert "UnlockToken" not in json.dumps(record) and "Challenge" not in json.dumps(record)


def test_token_update_values() -> None:
    message = parse_plist((INTEROP / "mdm" / "testdata" / "TokenUpdate.2.plist").read_bytes())
    record = checkin_event(message, 1000)
    assert record["token_hex"] == base64.b64decode(
        "G6fJAGbFD3domiTzpCXK9oowD3KeiORgqUFgItXWQsw=").hex()
    assert record["push_magic"] == "888CEB39-BFFA-40F6-89FA-B60752EB63C2"


def test_webhook_authenticate_event() -> None:
    body = (INTEROP / "service" / "webhook" / "testdata" / "Authenticate.2.json").read_bytes()
    record = event_to_checkin(body, 5, tenant="acme")
    assert record["message_type"] == "AUTHENTICATE"
    assert record["enrollment_id"] == "66ADE930-5FDF-5EC4-8429-15640684C489"
    assert record["topic"] == TOPIC and record["event_id"] == "test_event_id"


def test_webhook_acknowledge_event() -> None:
    body = (INTEROP / "service" / "webhook" / "testdata" / "DeviceInformation.1.json").read_bytes()
    record = event_to_checkin(body, 5, tenant="acme")
    assert record["message_type"] == "COMMAND_REPORT"
    assert record["status"] == "Acknowledged"
    assert record["command_uuid"] == "76eda240-5488-4989-8339-f2ae160113c4"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"topic": "mdm.Authenticate"}', "neither checkin_event"),
        (b'{"checkin_event": {"raw_payload": "!!!"}}', "not base64"),
        (b'{"checkin_event": {"raw_payload": "' + base64.b64encode(b"garbage") + b'"}}',
         "not a property list"),
    ],
)
def test_bad_webhook_bodies_have_reasons(body: bytes, reason: str) -> None:
    with pytest.raises(BadCheckin, match=reason):
        event_to_checkin(body, 0, "t")


def test_token_update_without_token_is_refused() -> None:
    with pytest.raises(BadCheckin, match="TokenUpdate without Token"):
        checkin_event({"MessageType": "TokenUpdate", "UDID": "X", "Topic": TOPIC}, 0)
