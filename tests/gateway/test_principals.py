"""Principals and credentials (services/common/principals.py), the rate limiter, schema v2."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from typing import Any

import fastavro
import pytest

from services.common.limits import InvalidInput
from services.common.principals import (
    NotAllowed,
    PrincipalConfigError,
    hmac_signature,
    load_principals,
    parse_principals,
)
from services.common.serde import AvroSerde
from services.gateway.auth import Authenticator, RateLimiter, Unauthenticated
from tests.gateway.harness import (
    ACME_KEY,
    ACME_ROTATED_KEY,
    ACME_SECRET,
    GLOBEX_KEY,
    GLOBEX_SECRET,
    OPS_KEY,
    PRINCIPALS,
    basic,
)

#: Known answers computed outside this code base, with (KEY: each secret)
#:   printf '%s' '{"checkin_event":{"raw_payload":""}}' \
#:     | openssl dgst -sha256 -hmac KEY -binary | base64
KAT_BODY = b'{"checkin_event":{"raw_payload":""}}'
KAT = {ACME_SECRET: "wLKwFpFF4fMMwatJCSXvI0IQvVc4N/msbgueLvR9HWk=",
       GLOBEX_SECRET: "u43QW3TQ5TpFkhzdK+UkbKR4IyHovjaZAKdsQwZI39g="}


def _auth() -> Authenticator:
    return Authenticator(parse_principals(PRINCIPALS), insecure_dev=False, default_tenant="x")


def test_hmac_known_answers() -> None:
    for secret, expected in KAT.items():
        assert hmac_signature(KAT_BODY, secret.encode()) == expected


def test_the_webhook_secret_decides_the_tenant() -> None:
    auth = _auth()
    acme = auth.webhook(KAT_BODY, KAT[ACME_SECRET])
    globex = auth.webhook(KAT_BODY, KAT[GLOBEX_SECRET])
    assert (acme.name, auth.tenant(acme, None)) == ("acme-mdm", "acme")
    assert (globex.name, auth.tenant(globex, None)) == ("globex-mdm", "globex")
    with pytest.raises(NotAllowed):  # a signed body replayed under another tenant
        auth.tenant(acme, "globex")
    with pytest.raises(Unauthenticated):  # the signature covers the body
        auth.webhook(KAT_BODY + b" ", KAT[ACME_SECRET])


@pytest.mark.parametrize("signature", [None, "", "ü", "äöü==", "not base64!", "AAAA", " "])
def test_malformed_signatures_are_unauthenticated(signature: str | None) -> None:
    with pytest.raises(Unauthenticated):
        _auth().webhook(KAT_BODY, signature)


def test_api_keys_identify_the_principal_and_rotate() -> None:
    auth = _auth()
    for key, name in ((ACME_KEY, "acme-mdm"), (ACME_ROTATED_KEY, "acme-mdm"),
                      (GLOBEX_KEY, "globex-mdm"), (OPS_KEY, "ops")):
        assert auth.api_key(basic(key)["Authorization"]).name == name
        assert auth.api_key(basic(key, "micromdm")["Authorization"]).name == name


@pytest.mark.parametrize("header", [
    None, "", "Bearer " + ACME_KEY, "Basic", "Basic !!!", "Basic ü",
    basic("pässwörd-pässwörd-pässwörd")["Authorization"],
    basic(ACME_KEY + "x")["Authorization"], basic("")["Authorization"],
])
def test_wrong_or_malformed_basic_auth_is_unauthenticated(header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        _auth().api_key(header)


def test_operators_must_name_a_tenant_of_theirs() -> None:
    auth = _auth()
    ops = auth.api_key(basic(OPS_KEY)["Authorization"])
    assert ops.operator and auth.tenant(ops, "globex") == "globex"
    for requested in (None, "initech"):
        with pytest.raises(NotAllowed):
            auth.tenant(ops, requested)
    acme = auth.api_key(basic(ACME_KEY)["Authorization"])
    for malformed in ("", "a b", "x" * 65):  # found by the fuzzer: ?tenant= was taken as absent
        with pytest.raises(InvalidInput, match="tenant"):
            auth.tenant(acme, malformed)


def _with(change: Any) -> dict[str, Any]:
    config = copy.deepcopy(PRINCIPALS)
    change(config["principals"][0])
    return config


@pytest.mark.parametrize(("config", "reason"), [
    (_with(lambda p: p.update(api_keys=[""])), "empty or short"),
    (_with(lambda p: p.update(api_keys=["short-key"])), "empty or short"),
    (_with(lambda p: p.update(webhook_secrets=[" " * 20])), "empty or short"),
    (_with(lambda p: p.update(api_keys=["sha256:abcd"])), "64 hex"),
    (_with(lambda p: p.update(tenants=[])), "tenants"),
    (_with(lambda p: p.update(tenants=["acme/evil"])), "tenant"),
    (_with(lambda p: p.update(tenants=["acme", "globex"])), "one tenant"),
    (_with(lambda p: p.update(api_keys=[GLOBEX_KEY])), "two principals"),
    (_with(lambda p: p.update(name="globex-mdm")), "twice"),
    (_with(lambda p: p.pop("api_keys") and p.pop("webhook_secrets")), "no api_keys"),
    ({"principal": []}, "top-level"),
])
def test_unusable_configurations_are_refused(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(PrincipalConfigError, match=reason):
        parse_principals(config)


def test_configuration_from_a_yaml_file_holds_only_digests(tmp_path: Any) -> None:
    digest = hashlib.sha256(ACME_KEY.encode()).hexdigest()
    path = tmp_path / "principals.yaml"
    path.write_text(f"principals:\n  - name: a\n    tenants: [acme]\n"
                    f"    api_keys: ['sha256:{digest}']\n")
    principals = load_principals(path, None)
    assert principals.by_api_key(ACME_KEY.encode()) is not None
    assert principals.by_api_key(digest.encode()) is None
    with pytest.raises(PrincipalConfigError, match="cannot read"):
        load_principals(tmp_path / "missing.yaml", None)
    with pytest.raises(PrincipalConfigError) as bad:
        load_principals(None, "principals: [ {name: a, api_keys: [" + ACME_KEY)
    assert ACME_KEY not in str(bad.value)


def test_rate_limiter_refills_at_its_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, now=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") == 0  # per principal
    now[0] += 0.5  # one token back
    assert limiter.retry_after("a") == 0 and limiter.retry_after("a") == 1


def test_version_1_records_decode_with_no_principal() -> None:
    """Bytes written with the released v1 NotificationRequest/CheckinEvent still decode."""
    serde = AvroSerde()
    for name, record in {
        "NotificationRequest": {"request_id": "r", "tenant": "acme", "kind": "MDM",
                                "initiator": "USER", "requested_at": 1},
        "CheckinEvent": {"event_id": "e", "enrollment_id": "U", "message_type": "OTHER",
                         "occurred_at": 1},
    }.items():
        v1 = serde.schemas.history(name)[0]
        assert v1.version == 1 and "principal" not in json.dumps(v1.raw)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, v1.parsed, record)
        decoded = serde.decode_as(b"\xc3\x01" + v1.fingerprint + body.getvalue(), name)
        assert decoded["principal"] is None
