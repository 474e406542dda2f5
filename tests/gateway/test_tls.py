"""TLS on the gateway's own listener, with a certificate this test issues."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.sim.apns.certs import make_ca, make_server_cert
from tests.gateway.harness import ACME_KEY, basic, gateway_settings, read_records, running_gateway


@pytest.mark.kafka
def test_push_over_tls(kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    server = make_server_cert(ca, tmp_path / "server")
    settings = gateway_settings(tls_cert_file=server.cert_path, tls_key_file=server.key_path)
    with running_gateway(kafka_settings, topics, settings) as gw:
        assert gw.base_url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(ca.cert_path))
        with gw.client(verify=trusted) as client:
            r = client.put("/v1/push/UDID-TLS", headers=basic(ACME_KEY))
            assert r.status_code == 202, r.text
        # Nobody talks to it in plain HTTP, or trusting another CA.
        with pytest.raises(httpx.HTTPError):
            httpx.get(gw.base_url.replace("https://", "http://") + "/healthz", timeout=10)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(gw.base_url + "/healthz", timeout=10)
        # The ops port stays plain HTTP on its own listener.
        assert httpx.get(gw.ops_url + "/livez", timeout=10).status_code == 200
    [record] = read_records(kafka_settings, topics.requests, 1)
    assert record["enrollment_ids"] == ["UDID-TLS"] and record["tenant"] == "acme"
