"""The gateway over real HTTP on loopback, producing to the real broker: what is accepted."""

from __future__ import annotations

import httpx
import pytest

from services.common.catalogue import Topics
from services.common.principals import hmac_signature
from services.common.settings import KafkaSettings
from tests.gateway.harness import (
    ACME_KEY,
    ACME_ROTATED_KEY,
    ACME_SECRET,
    DEVICE_PLISTS,
    GLOBEX_KEY,
    OPS_KEY,
    WEBHOOK_EVENTS,
    basic,
    count_records,
    read_records,
    running_gateway,
)


@pytest.mark.kafka
def test_webhook_and_raw_checkins_reach_the_topic_with_the_credentials_tenant(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        for name in ("Authenticate.2.json", "DeviceInformation.1.json"):
            body = (WEBHOOK_EVENTS / name).read_bytes()
            signature = hmac_signature(body, ACME_SECRET.encode())
            r = client.post("/webhook", content=body, headers={"X-Hmac-Signature": signature})
            assert r.status_code == 200, r.text
        for plist in sorted(DEVICE_PLISTS.glob("*.plist")):
            r = client.put("/checkin", content=plist.read_bytes(), headers=basic(ACME_KEY))
            assert r.status_code == 200, r.text
    records = read_records(kafka_settings, topics.checkins, 7)
    assert len(records) == 7
    types = sorted(r["message_type"] for r in records)
    assert types == ["AUTHENTICATE"] * 3 + ["COMMAND_REPORT"] * 2 + ["TOKEN_UPDATE"] * 2
    assert {(r["tenant"], r["principal"]) for r in records} == {("acme", "acme-mdm")}


@pytest.mark.kafka
def test_push_api_queues_a_request_for_the_keys_tenant(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        r = client.put("/v1/push/UDID-1,UDID-2?command_type=install_app", headers=basic(ACME_KEY))
        assert r.status_code == 202, r.text
        assert set(r.json()["status"]) == {"UDID-1", "UDID-2"}
        rotated = client.get("/v1/push/UDID-3", headers=basic(ACME_ROTATED_KEY))
        assert rotated.status_code == 202, rotated.text
    first, second = read_records(kafka_settings, topics.requests, 2)
    assert first["enrollment_ids"] == ["UDID-1", "UDID-2"]
    assert (first["initiator"], first["tenant"], first["source"], first["principal"]) == (
        "USER", "acme", "push-api", "acme-mdm")
    assert (second["tenant"], second["principal"]) == ("acme", "acme-mdm")


@pytest.mark.kafka
def test_nanocmd_fossmdm_and_micromdm_conventions(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """NanoCMD's FossMDM: GET {base}/{30 ids} as nanomdm; with its MicroMDM option, GET
    /push/{udid} as micromdm. Both with a tenant's key as the password."""
    ids = [f"UDID-{i:02d}" for i in range(30)]
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        nano = client.get("/v1/push/" + ",".join(ids), headers=basic(GLOBEX_KEY, "nanomdm"))
        assert nano.status_code == 202, nano.text
        micro = client.get("/push/UDID-99", headers=basic(GLOBEX_KEY, "micromdm"))
        assert micro.status_code == 202, micro.text
        assert micro.json()["status"] == "queued"
    nano_rec, micro_rec = read_records(kafka_settings, topics.requests, 2)
    assert nano_rec["enrollment_ids"] == ids and micro_rec["enrollment_ids"] == ["UDID-99"]
    assert micro_rec["request_id"] == micro.json()["id"]
    assert {r["tenant"] for r in (nano_rec, micro_rec)} == {"globex"}


@pytest.mark.kafka
def test_an_operator_names_the_tenant_it_acts_for(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        unnamed = client.get("/v1/push/A", headers=basic(OPS_KEY))
        assert unnamed.status_code == 403 and "name one" in unnamed.json()["error"]
        foreign = client.get("/v1/push/A?tenant=initech", headers=basic(OPS_KEY))
        assert foreign.status_code == 403
        named = client.get("/v1/push/A?tenant=globex&initiator=admin", headers=basic(OPS_KEY))
        assert named.status_code == 202, named.text
    [record] = read_records(kafka_settings, topics.requests, 1)
    assert (record["tenant"], record["principal"], record["initiator"]) == (
        "globex", "ops", "ADMIN")
    assert count_records(kafka_settings, topics.requests) == 1


@pytest.mark.kafka
def test_health_description_and_ops_port(kafka_settings: KafkaSettings, topics: Topics) -> None:
    with running_gateway(kafka_settings, topics) as gw, gw.client() as client:
        assert client.get("/healthz").json() == {"ok": True}
        assert client.get("/readyz").status_code == 200
        assert client.get("/openapi.json").json()["openapi"] == "3.1.0"
        public_metrics = client.get("/metrics")
        assert public_metrics.status_code == 404 and public_metrics.json()["error"]
        client.get("/v1/push/A")  # one refusal, counted
        ops = httpx_get(gw.ops_url + "/metrics")
        assert 'mdmpush_gateway_requests_total{route="/v1/push/{ids}",status="401"}' in ops
        assert httpx_get(gw.ops_url + "/livez") == '{"ok": true}'
        assert httpx_get(gw.ops_url + "/readyz") == '{"ok": true}'


def httpx_get(url: str) -> str:
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    return r.text
