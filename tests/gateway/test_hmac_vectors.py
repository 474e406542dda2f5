"""Known-answer vectors for everything the gateway hashes or signs.

The other gateway tests sign webhook bodies with ``hmac_signature`` — the code under test — so a
wrong algorithm, key encoding or output encoding on both sides would still agree. The values here
were computed outside Python with OpenSSL 3.0 and are hard-coded:

    printf 'what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe            # RFC 4231 #2
    openssl dgst -sha256 -hmac acme-webhook-secret-0001 -binary \\
        tests/interop/nanomdm/service/webhook/testdata/Authenticate.2.json | base64
    openssl dgst -sha256 -hmac acme-webhook-secret-0001 -binary \\
        tests/interop/nanomdm/service/webhook/testdata/DeviceInformation.1.json | base64
    printf '' | openssl dgst -sha256 -hmac globex-webhook-secret-01 -binary | base64
    printf 'acme-api-key-0123456789' | openssl dgst -sha256                 # API key digest

The RFC 4231 vector also appears in the RFC itself (test case 2, HMAC-SHA-256), a second source
independent of OpenSSL.
"""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretStr

from services.common.catalogue import Topics
from services.common.principals import (
    Principal,
    Principals,
    api_key_digest,
    hmac_signature,
    parse_principals,
)
from services.common.settings import KafkaSettings
from tests.gateway.harness import (
    ACME_KEY,
    ACME_SECRET,
    GLOBEX_SECRET,
    WEBHOOK_EVENTS,
    basic,
    gateway_settings,
    read_records,
    running_gateway,
)

#: RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
RFC4231_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
RFC4231_B64 = "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="

#: (file under WEBHOOK_EVENTS or literal body, secret, X-Hmac-Signature) from openssl.
WEBHOOK_VECTORS = [
    ("Authenticate.2.json", ACME_SECRET, "9mgb9rlh6RKfQTFSMlfw7jnHDog945Ru1LAiWrdUECg="),
    ("DeviceInformation.1.json", ACME_SECRET, "V4emL3qAf3FvEedkQslg+oxy7Kv76GKYBcr/ymg/Qr4="),
]
EMPTY_BODY_GLOBEX = "tLTTmjOU9DRa/gjKU5EpoEa0Pi+Ye1BfXOPEUyh7b7c="

#: sha256 of ACME_KEY, as an operator configures a key by digest (``sha256:<hex>``).
ACME_KEY_SHA256 = "ffbc90684e9c58c6992fc325e80a451d59b4bd50adb5e1a40c641e85d87e1019"


def test_the_webhook_signature_is_rfc_4231_hmac_sha256_in_base64() -> None:
    assert hmac_signature(b"what do ya want for nothing?", b"Jefe") == RFC4231_B64
    assert base64.b64decode(RFC4231_B64).hex() == RFC4231_HEX


@pytest.mark.parametrize(("name", "secret", "signature"), WEBHOOK_VECTORS)
def test_nanomdm_webhook_bodies_sign_as_openssl_says(name: str, secret: str,
                                                     signature: str) -> None:
    body = (WEBHOOK_EVENTS / name).read_bytes()
    assert hmac_signature(body, secret.encode()) == signature


def test_principals_accept_the_openssl_signature_and_only_for_its_secret() -> None:
    acme = Principal("acme-mdm", ("acme",))
    globex = Principal("globex-mdm", ("globex",))
    principals = Principals([(acme, [], [ACME_SECRET.encode()]),
                             (globex, [], [GLOBEX_SECRET.encode()])])
    name, _, signature = WEBHOOK_VECTORS[0]
    body = (WEBHOOK_EVENTS / name).read_bytes()
    assert principals.by_webhook_signature(body, signature) == acme
    assert principals.by_webhook_signature(b"", EMPTY_BODY_GLOBEX) == globex
    # One byte more in the body, or the other tenant's vector: nobody signed that.
    assert principals.by_webhook_signature(body + b" ", signature) is None
    assert principals.by_webhook_signature(body, EMPTY_BODY_GLOBEX) is None


def test_an_api_key_configured_by_its_openssl_digest_is_recognised() -> None:
    assert api_key_digest(ACME_KEY).hex() == ACME_KEY_SHA256
    principals = parse_principals({"principals": [
        {"name": "acme-mdm", "tenants": ["acme"], "api_keys": ["sha256:" + ACME_KEY_SHA256]},
    ]})
    found = principals.by_api_key(ACME_KEY.encode())
    assert found is not None and found.name == "acme-mdm"
    assert principals.by_api_key(ACME_KEY.encode() + b"x") is None


@pytest.mark.kafka
def test_the_live_gateway_takes_the_hard_coded_signature_and_digest(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    """End to end: a webhook signed with the openssl value and a push-API key configured only as
    its openssl digest are accepted; the same body with a signature one bit off is refused."""
    config = {"principals": [
        {"name": "acme-mdm", "tenants": ["acme"], "api_keys": ["sha256:" + ACME_KEY_SHA256],
         "webhook_secrets": [ACME_SECRET]},
    ]}
    settings = gateway_settings(principals=SecretStr(json.dumps(config)))
    name, _, signature = WEBHOOK_VECTORS[0]
    body = (WEBHOOK_EVENTS / name).read_bytes()
    raw = bytearray(base64.b64decode(signature))
    raw[0] ^= 1
    off_by_one_bit = base64.b64encode(bytes(raw)).decode()
    with running_gateway(kafka_settings, topics, settings) as gw, gw.client() as client:
        bad = client.post("/webhook", content=body, headers={"X-Hmac-Signature": off_by_one_bit})
        good = client.post("/webhook", content=body, headers={"X-Hmac-Signature": signature})
        push = client.get("/v1/push/E1", headers=basic(ACME_KEY))
    assert bad.status_code == 401, bad.text
    assert good.status_code == 200, good.text
    assert push.status_code in (200, 202), push.text
    [record] = read_records(kafka_settings, topics.checkins, 1)
    assert (record["tenant"], record["principal"]) == ("acme", "acme-mdm")
