"""Every attack of issue 8 against a real gateway on the real broker: refused, nothing published.

"Nothing published" is checked on the topics themselves (their end offsets): a refused forged
check-in cannot reach the registry, the correlator or anything else downstream.
"""

from __future__ import annotations

import base64
import json
import plistlib
import socket
import struct
from typing import Any

import httpx
import pytest

from services.common.catalogue import Topics
from services.common.kafka import DeliveryError
from services.common.principals import hmac_signature
from services.common.settings import KafkaSettings
from services.gateway.producer import AsyncProducer
from tests.gateway.harness import (
    ACME_KEY,
    ACME_SECRET,
    DEVICE_PLISTS,
    GLOBEX_KEY,
    GLOBEX_SECRET,
    WEBHOOK_EVENTS,
    basic,
    count_records,
    gateway_settings,
    read_records,
    running_gateway,
)

#: The NanoMDM webhook event of the vendored corpus, and its signature under ACME_SECRET,
#: computed outside this code base:
#:   openssl dgst -sha256 -hmac acme-webhook-secret-0001 -binary < Authenticate.2.json | base64
SIGNED_EVENT = (WEBHOOK_EVENTS / "Authenticate.2.json").read_bytes()
SIGNED_EVENT_SIGNATURE = "9mgb9rlh6RKfQTFSMlfw7jnHDog945Ru1LAiWrdUECg="

TOKEN_UPDATE = (DEVICE_PLISTS / "TokenUpdate.1.plist").read_bytes()
FORGED_CHECKINS = {
    "TokenUpdate": TOKEN_UPDATE,
    "CheckOut": plistlib.dumps({"MessageType": "CheckOut",
                                "UDID": "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",
                                "Topic": "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17"}),
    "command report": (DEVICE_PLISTS / "DeviceInformation.1.plist").read_bytes(),
}


def _webhook_event(plist: bytes) -> bytes:
    return json.dumps({"topic": "mdm.TokenUpdate", "checkin_event": {
        "raw_payload": base64.b64encode(plist).decode()}}).encode()


def _assert_error(response: httpx.Response, status: int, reason: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert reason in response.json()["error"]


@pytest.mark.kafka
def test_forged_checkins_are_refused_and_nothing_is_published(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        for body in FORGED_CHECKINS.values():
            for method in (client.put, client.post):
                # No credentials at all, naming the victim's tenant or another one.
                for query in ("", "?tenant=acme", "?tenant=evil"):
                    _assert_error(method("/checkin" + query, content=body), 401, "API key")
                # Another tenant's valid key, naming the victim's tenant.
                _assert_error(method("/checkin?tenant=acme", content=body,
                                     headers=basic(GLOBEX_KEY)), 403, "acme")
            # Through the webhook: unsigned, signed with a wrong secret, signed by another
            # tenant's secret but naming the victim.
            event = _webhook_event(body)
            _assert_error(client.post("/webhook?tenant=acme", content=event), 401)
            wrong = hmac_signature(event, b"not-the-secret-0000000")
            _assert_error(client.post("/webhook?tenant=acme", content=event,
                                      headers={"X-Hmac-Signature": wrong}), 401)
            other = hmac_signature(event, GLOBEX_SECRET.encode())
            _assert_error(client.post("/webhook?tenant=acme", content=event,
                                      headers={"X-Hmac-Signature": other}), 403, "acme")
    assert count_records(kafka_settings, topics.checkins) == 0


@pytest.mark.kafka
def test_a_signed_webhook_replayed_under_another_tenant_is_refused(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """The HMAC covers only the body (NanoMDM's format), so the secret decides the tenant."""
    headers = {"X-Hmac-Signature": SIGNED_EVENT_SIGNATURE}
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        for tenant in ("globex", "evil"):
            _assert_error(client.post(f"/webhook?tenant={tenant}", content=SIGNED_EVENT,
                                      headers=headers), 403, tenant)
        assert count_records(kafka_settings, topics.checkins) == 0
        accepted = client.post("/webhook", content=SIGNED_EVENT, headers=headers)
        assert accepted.status_code == 200, accepted.text
        # Another tenant's own credential publishes for that tenant only, never for acme.
        body = TOKEN_UPDATE
        assert client.put("/checkin", content=body, headers=basic(GLOBEX_KEY)).status_code == 200
    acme, globex = sorted(read_records(kafka_settings, topics.checkins, 2),
                          key=lambda r: str(r["tenant"]))
    assert (acme["tenant"], acme["principal"]) == ("acme", "acme-mdm")
    assert (globex["tenant"], globex["principal"]) == ("globex", "globex-mdm")
    assert count_records(kafka_settings, topics.checkins) == 2


@pytest.mark.kafka
def test_push_for_another_tenant_is_refused(kafka_settings: KafkaSettings, topics: Topics) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        _assert_error(client.put("/v1/push/A?tenant=other", headers=basic(ACME_KEY)), 403,
                      "other")
        _assert_error(client.put("/v1/push/A?tenant=globex", headers=basic(ACME_KEY)), 403)
        _assert_error(client.get("/push/A?tenant=globex", headers=basic(ACME_KEY, "micromdm")),
                      403)
        _assert_error(client.get("/v1/push/A"), 401)
        unauth = client.get("/push/A", headers=basic("", "micromdm"))
        _assert_error(unauth, 401)
        assert unauth.headers["WWW-Authenticate"].startswith("Basic")
        # The webhook secret is not an API key, nor the other way round.
        _assert_error(client.get("/v1/push/A", headers=basic(ACME_SECRET)), 401)
        _assert_error(client.post("/webhook", content=SIGNED_EVENT, headers=basic(ACME_KEY)),
                      401)
    assert count_records(kafka_settings, topics.requests) == 0


@pytest.mark.kafka
def test_malformed_credentials_and_bodies_get_json_4xx(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    nested = b"[" * 100_000
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        non_ascii_password = base64.b64encode("nanomdm:pässwörd-ünïcödé".encode())
        _assert_error(client.get("/v1/push/A", headers={
            b"Authorization": b"Basic " + non_ascii_password}), 401)
        _assert_error(client.get("/v1/push/A", headers={
            b"Authorization": "Basic ü".encode()}), 401)
        _assert_error(client.get("/v1/push/A", headers={
            b"Authorization": "Basic ü".encode("latin-1")}), 401)
        for signature in ("ü".encode(), "ü".encode("latin-1"), b"\xff\xfe"):
            _assert_error(client.post("/webhook", content=SIGNED_EVENT,
                                      headers={b"X-Hmac-Signature": signature}), 401)
        _assert_error(client.post("/webhook", content=nested, headers={
            "X-Hmac-Signature": hmac_signature(nested, ACME_SECRET.encode())}), 400,
            "nested 100000 deep")
    assert count_records(kafka_settings, topics.checkins) == 0


def _cyclic_binary_plist() -> bytes:
    """bplist00 of {"X": a}, where the array a contains itself."""
    objects = [bytes([0xD1, 1, 2]), b"\x51X", bytes([0xA1, 2])]
    body, offsets = b"bplist00", []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = len(body)
    body += bytes(offsets)
    return body + bytes(6) + bytes([1, 1]) + struct.pack(">QQQ", len(objects), 0, table)


@pytest.mark.kafka
def test_deep_and_cyclic_plists_get_json_400(kafka_settings: KafkaSettings,
                                              topics: Topics) -> None:
    deep = (b"<plist><dict><key>X</key>" + b"<array>" * 40_000 + b"</array>" * 40_000
            + b"</dict></plist>")
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        for body in (deep, _cyclic_binary_plist()):
            _assert_error(client.put("/checkin", content=body, headers=basic(ACME_KEY)), 400,
                          "neither MessageType")
            event = _webhook_event(body)
            _assert_error(client.post("/webhook", content=event, headers={
                "X-Hmac-Signature": hmac_signature(event, ACME_SECRET.encode())}), 400)
    assert count_records(kafka_settings, topics.checkins) == 0


@pytest.mark.kafka
def test_unparseable_http_is_one_log_line_without_the_offending_bytes(
    kafka_settings: KafkaSettings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    secret_like = b"Basic " + b"c2VjcmV0" * 3000  # a 24 KB header, over the 16 KiB limit
    with running_gateway(kafka_settings, topics) as gw:
        port = int(gw.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET /v1/push/A HTTP/1.1\r\nHost: x\r\nAuthorization: " + secret_like
                         + b"\r\nConnection: close\r\n\r\n")
            answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer
    assert "refused a request that is not valid HTTP (LineTooLong)" in caplog.text
    assert "c2VjcmV0" not in caplog.text and "Traceback" not in caplog.text


def _token_update(**changes: Any) -> bytes:
    message = plistlib.loads(TOKEN_UPDATE)
    message.update(changes)
    return plistlib.dumps(message)


@pytest.mark.kafka
def test_input_limits_at_the_door(kafka_settings: KafkaSettings, topics: Topics) -> None:
    settings = gateway_settings(max_body_bytes=512 * 1024)
    with running_gateway(kafka_settings, topics, settings) as gw, gw.client() as client:
        auth = basic(ACME_KEY)
        for changes, reason in (
            ({"UDID": "U" * 400_000}, "enrollment_id"),
            ({"UDID": "UDID/../../x"}, "enrollment_id"),
            ({"Token": b"\x01\x02\x03"}, "token_hex"),
            ({"Token": b"\x01" * 101}, "token_hex"),
            ({"Topic": "not a topic"}, "topic"),
            ({"PushMagic": "m" * 1000}, "push_magic"),
        ):
            _assert_error(client.put("/checkin", content=_token_update(**changes), headers=auth),
                          400, reason)
        _assert_error(client.put("/checkin", content=b"x" * (600 * 1024), headers=auth), 413,
                      "body over")
        many = ",".join(f"U{i}" for i in range(1001))
        _assert_error(client.get(f"/v1/push/{many}", headers=auth), 413, "at most 1000")
        for path in ("/v1/push/A,,B", "/v1/push/" + "U" * 300, "/v1/push/A?initiator=robot",
                     "/v1/push/A?command_type=a%20b", "/push/A?initiator=x"):
            _assert_error(client.get(path, headers=auth), 400)
        _assert_error(client.get("/nope"), 404)
        _assert_error(client.delete("/checkin"), 405)
    assert count_records(kafka_settings, topics.checkins) == 0
    assert count_records(kafka_settings, topics.requests) == 0


@pytest.mark.kafka
def test_rate_limit_per_principal(kafka_settings: KafkaSettings, topics: Topics) -> None:
    settings = gateway_settings(rate_per_s=0.01, rate_burst=2)
    with running_gateway(kafka_settings, topics, settings) as gw, gw.client() as client:
        acme = [client.get("/v1/push/A", headers=basic(ACME_KEY)) for _ in range(3)]
        assert [r.status_code for r in acme] == [202, 202, 429]
        _assert_error(acme[2], 429, "acme-mdm")
        assert int(acme[2].headers["Retry-After"]) >= 1
        # Another principal has its own bucket.
        assert client.get("/v1/push/A", headers=basic(GLOBEX_KEY)).status_code == 202
    assert count_records(kafka_settings, topics.requests) == 3


class _BrokenProducer(AsyncProducer):
    """A producer whose send fails with `error` (a bug, or Kafka refusing)."""

    def __init__(self, error: Exception) -> None:  # no Kafka client: this one never sends
        self.error = error

    async def send(self, topic: str, value: bytes, key: str | bytes | None,
                   headers: Any = None, partition: int | None = None) -> None:
        raise self.error

    def close(self, timeout_s: float = 10.0) -> None:
        pass


@pytest.mark.kafka
def test_unexpected_errors_are_json_500_without_internals(
    kafka_settings: KafkaSettings, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    bug = RuntimeError("internal detail /etc/secret-path")
    with running_gateway(kafka_settings, topics, producer=_BrokenProducer(bug)) as gw, \
            gw.client() as client:
        r = client.get("/v1/push/A", headers=basic(ACME_KEY))
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert "secret-path" not in r.text
    assert "internal detail /etc/secret-path" in caplog.text  # logged for the operator


@pytest.mark.kafka
def test_kafka_refusing_is_503_with_retry_after(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    refused = DeliveryError("broker down: /internal/detail")
    with running_gateway(kafka_settings, topics, producer=_BrokenProducer(refused)) as gw, \
            gw.client() as client:
        r = client.put("/checkin", content=TOKEN_UPDATE, headers=basic(ACME_KEY))
    _assert_error(r, 503, "Kafka did not acknowledge")
    assert r.headers["Retry-After"] == "1" and "internal" not in r.text
