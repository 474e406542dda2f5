"""The simulator's pure parts: request rules, fault draws, the store, the PKI helpers."""

from __future__ import annotations

import argparse
import json
import random
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from services.sim.apns.certs import issue_push_certificate, load_ca, make_ca, topic_of_certificate
from services.sim.apns.connection import PeerIdentity
from services.sim.apns.faults import Faults
from services.sim.apns.fleet_port import AcceptedPush
from services.sim.apns.request import Rejection, ValidRequest, validate
from services.sim.apns.server import new_apns_id
from services.sim.apns.store import PushStore

TOPIC = "com.apple.mgmt.External.0d5a3c8e-5b43-4a0e-9a64-9bd0b2a1f3c7"
TOKEN = "AB" * 32


def headers(**extra: str) -> list[tuple[bytes, bytes]]:
    base = {":method": "POST", ":path": f"/3/device/{TOKEN}", ":scheme": "https"}
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return [(k.encode(), v.encode()) for k, v in base.items()]


def test_valid_request_is_normalised() -> None:
    req = validate(headers(apns_expiration="123", apns_priority="5"), b'{"mdm":"m"}', TOPIC)
    assert req == ValidRequest(
        token_hex=TOKEN.lower(),
        topic=TOPIC,
        push_type="mdm",
        priority=5,
        expiration=123,
        apns_id=None,
        collapse_id=None,
    )


def test_first_failure_wins_and_keeps_a_valid_apns_id() -> None:
    apns_id = "6f1f9d8e-1c2b-4a3d-9e8f-7a6b5c4d3e2f"
    r = validate(headers(apns_id=apns_id, apns_priority="0"), b"", TOPIC)
    assert r == Rejection(400, "BadPriority", apns_id.encode())


def test_connection_without_certificate_needs_a_topic() -> None:
    assert validate(headers(), b'{"mdm":"m"}', None) == Rejection(400, "MissingTopic")
    ok = validate(headers(apns_topic="com.example.app"), b'{"aps":{}}', None)
    assert isinstance(ok, ValidRequest) and ok.push_type == "alert"


def test_voip_payload_limit_is_larger() -> None:
    body = b'{"aps":{"x":"' + b"x" * 4500 + b'"}}'
    voip = validate(headers(apns_topic="a.voip", apns_push_type="voip"), body, None)
    alert = validate(headers(apns_topic="a"), body, None)
    assert isinstance(voip, ValidRequest)
    assert alert == Rejection(413, "PayloadTooLarge")


def test_fault_draws_are_seeded_and_shares_validated() -> None:
    faults = Faults(share_500=0.5, share_reset=0.25, seed=7)
    rng1, rng2 = random.Random(7), random.Random(7)
    draws = [faults.decide(rng1) for _ in range(2000)]
    assert draws == [faults.decide(rng2) for _ in range(2000)]
    assert 900 < draws.count("500") < 1100 and 400 < draws.count("reset") < 600
    assert "503" not in draws
    with pytest.raises(ValueError):
        Faults(share_500=0.7, share_503=0.7)
    with pytest.raises(ValueError):
        Faults(goaway_after_streams=0)
    assert Faults(latency_ms=5).delay_s(random.Random()) == 0.005


def test_faults_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APNS_SIM_FAULT_SHARE_503", "0.25")
    monkeypatch.setenv("APNS_SIM_FAULT_GOAWAY_AFTER_STREAMS", "9")
    parser = argparse.ArgumentParser()
    Faults.add_arguments(parser)
    ns = parser.parse_args(
        ["--fault-revoked-serials", "0x10,17", "--fault-unregistered-tokens", "AA" * 32]
    )
    faults = Faults.from_arguments(ns)
    assert faults.share_503 == 0.25 and faults.goaway_after_streams == 9
    assert faults.revoked_serials == {16, 17}
    assert list(faults.unregistered_tokens) == ["aa" * 32]


def _push(token: str, expiration: int, magic: str = "m") -> AcceptedPush:
    return AcceptedPush(
        apns_id="id",
        topic=TOPIC,
        token_hex=token,
        payload=b'{"mdm":"%s"}' % magic.encode(),
        priority=10,
        expiration=expiration,
        push_type="mdm",
        received_at=0.0,
    )


def test_store_keeps_latest_and_drops_expired() -> None:
    store = PushStore()
    assert store.put(_push("t1", 100, "old"), now=10)
    assert store.put(_push("t1", 100, "new"), now=11)
    assert not store.put(_push("t2", 5), now=10)  # already expired: never stored
    assert store.put(_push("t3", 20), now=10)
    assert store.purge_expired(now=50) == 1
    taken = store.take("t1", now=60)
    assert taken is not None and taken.push_magic == "new"
    assert store.take("t1", now=60) is None
    assert (store.stored, store.replaced, store.forwarded, store.expired) == (3, 1, 1, 1)
    assert len(store) == 0


def test_store_refuses_a_push_whose_device_connected_meanwhile() -> None:
    store = PushStore()
    seen = store.connects  # the simulator reads it before asking the gateway
    assert store.connected("t1", now=10) is None  # the device connects: nothing stored yet
    assert not store.put_offline(_push("t1", 100), now=10, connects_seen=seen)
    assert store.peek("t1") is None  # the simulator delivers again instead
    assert store.put_offline(_push("t1", 100), now=10, connects_seen=store.connects)
    assert store.put_offline(_push("t2", 100), now=10, connects_seen=seen)  # other devices
    assert store.peek("t1") is not None and store.peek("t2") is not None
    store.purge_expired(now=10)  # forgets connections, keeps live pushes
    assert store.put_offline(_push("t1", 100, "new"), now=10, connects_seen=seen)


def test_store_put_back_keeps_a_newer_push() -> None:
    store = PushStore()
    store.put(_push("t1", 100, "old"), now=10)
    old = store.connected("t1", now=10)
    assert old is not None
    store.put(_push("t1", 100, "new"), now=11)  # arrived while "old" was being delivered
    assert not store.put_back(old, now=12)  # the device was offline after all
    stored = store.peek("t1")
    assert stored is not None and stored.push_magic == "new"
    taken = store.take("t1", now=13)
    assert taken is not None and store.put_back(taken, now=13)
    assert store.peek("t1") is taken
    assert (store.stored, store.forwarded, store.replaced) == (2, 0, 1)


def test_peer_identity_from_ssl_peercert() -> None:
    cert = {"subject": ((("userId", TOPIC),), (("commonName", "APSP:x"),)), "serialNumber": "1F"}
    peer = PeerIdentity.from_peercert(cert)
    assert (peer.topic, peer.serial) == (TOPIC, 31)
    assert PeerIdentity.from_peercert(None).topic is None


def test_push_certificate_carries_topic_in_uid(tmp_path: Path) -> None:
    make_ca(tmp_path)
    ca = load_ca(tmp_path)  # as another process would
    files = issue_push_certificate(ca, TOPIC, tmp_path)
    cert = x509.load_pem_x509_certificate(files.cert_path.read_bytes())
    assert topic_of_certificate(cert) == TOPIC
    assert cert.serial_number == files.serial
    combined = files.combined_path.read_bytes()
    assert b"BEGIN CERTIFICATE" in combined and b"PRIVATE KEY" in combined


@pytest.mark.parametrize(
    "body",
    [
        b'{"mdm":"5d1c4f6e-push-magic"}',
        b'{ "mdm" : "x" }',
        b'{\n"mdm":\t""\r}',
        b'{"mdm":"a\\"b"}',
        b'{"mdm":"\xc3\xa9"}',
        b'{"mdm":"\xc3"}',
        b'{"mdm":1}',
        b'{"mdm":"x","a":1}',
        b'{"mdm":"x"}\x0c',
        b'{"mdm":"x\x01"}',
        b'{"MDM":"x"}',
        b"[]",
    ],
)
def test_mdm_payload_check_agrees_with_a_json_parse(body: bytes) -> None:
    try:
        value = json.loads(body)
        expected = (
            isinstance(value, dict) and list(value) == ["mdm"] and isinstance(value["mdm"], str)
        )
    except ValueError:
        expected = False
    result = validate(headers(), body, TOPIC)
    assert isinstance(result, ValidRequest) == expected


def test_duplicate_apns_headers_are_refused_known_or_not() -> None:
    for name in ("apns-priority", "apns-unknown"):
        hdrs = [*headers(), (name.encode(), b"10"), (name.encode(), b"10")]
        assert validate(hdrs, b'{"mdm":"m"}', TOPIC) == Rejection(400, "DuplicateHeaders")
    twice = [*headers(), (b":path", b"/nowhere")]  # a repeated pseudo-header: the last counts
    assert validate(twice, b'{"mdm":"m"}', TOPIC) == Rejection(404, "BadPath")


def test_made_up_apns_ids_are_random_v4_uuids() -> None:
    ids = {new_apns_id() for _ in range(1000)}
    assert len(ids) == 1000
    for raw in list(ids)[:50]:
        parsed = uuid.UUID(raw.decode())
        assert str(parsed).encode() == raw and parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
