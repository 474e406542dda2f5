"""Input limits (services/common/limits.py) and the checked-in OpenAPI description."""

from __future__ import annotations

import json

import pytest

from services.common.limits import (
    InvalidInput,
    check_checkin_event,
    check_json_depth,
    check_notification_request,
    check_targets,
    check_token_hex,
    check_topic,
    json_depth,
)
from services.gateway.openapi import CHECKED_IN, rendered

TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
TOKEN = "ab" * 32


@pytest.mark.parametrize(("token", "ok"), [
    (TOKEN, True), ("AB" * 100, True), ("ab" * 31, False), ("ab" * 101, False),
    ("a" * 65, False), ("zz" * 32, False), ("ab" * 31 + "a/", False), ("", False),
])
def test_token_hex(token: str, ok: bool) -> None:
    if ok:
        assert check_token_hex(token) == token
    else:
        with pytest.raises(InvalidInput, match="token_hex"):
            check_token_hex(token)


@pytest.mark.parametrize(("topic", "mdm", "ok"), [
    (TOPIC, True, True), ("com.example.app", False, True), ("com.example.app", True, False),
    ("nodots", False, False), ("com..example", False, False), ("com.apple.mgmt.a/b", True, False),
    ("c." + "a" * 300, False, False),
])
def test_topic(topic: str, mdm: bool, ok: bool) -> None:
    if ok:
        assert check_topic(topic, mdm=mdm) == topic
    else:
        with pytest.raises(InvalidInput, match="topic"):
            check_topic(topic, mdm=mdm)


def test_targets_and_ids() -> None:
    assert check_targets(["UDID-1", "66ADE930-5FDF:user@example.com"]) == [
        "UDID-1", "66ADE930-5FDF:user@example.com"]
    for bad in (["a,b"], ["a/b"], [""], ["x" * 257], ["ü"]):
        with pytest.raises(InvalidInput, match="enrollment_ids"):
            check_targets(bad)
    with pytest.raises(InvalidInput, match="at most 3"):
        check_targets(["a", "b", "c", "d"], max_targets=3)


def test_json_depth_without_recursion() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * 100_000) == 100_000
    check_json_depth(b"[" * 32)
    with pytest.raises(InvalidInput, match="nested 33 deep"):
        check_json_depth(b"[" * 33)


def test_checkin_event_limits() -> None:
    good = {"enrollment_id": "UDID-1", "tenant": "acme", "udid": "UDID-1", "topic": TOPIC,
            "token_hex": TOKEN, "push_magic": "888CEB39-BFFA-40F6-89FA-B60752EB63C2"}
    check_checkin_event(good)
    for field, value in (("enrollment_id", "U" * 400_000), ("udid", "U" * 129),
                         ("token_hex", "abc"), ("topic", "x"), ("push_magic", "m" * 257),
                         ("tenant", "a b")):
        with pytest.raises(InvalidInput, match=field):
            check_checkin_event(dict(good, **{field: value}))


def test_notification_request_limits() -> None:
    good = {"tenant": "acme", "enrollment_ids": ["A"], "command_type": "install_app"}
    check_notification_request(good)
    check_notification_request({"tenant": "acme", "target_all": True})
    for change, field in (({"enrollment_ids": []}, "enrollment_ids"),
                          ({"tenant": ""}, "tenant"),
                          ({"command_type": "a b"}, "command_type"),
                          ({"aps_payload": "[" * 40}, "body"),
                          ({"aps_payload": json.dumps({"aps": {"alert": "x" * 5000}})},
                           "aps_payload")):
        with pytest.raises(InvalidInput, match=field):
            check_notification_request(dict(good, **change))


def test_checked_in_openapi_is_current() -> None:
    """docs/openapi.json is what the gateway serves (`python -m services.gateway.openapi`)."""
    assert CHECKED_IN.read_text() == rendered()
