"""Fuzzing the webhook event parser: any body ends in a CheckinEvent record or BadCheckin.

Bodies are arbitrary bytes, arbitrary JSON, NanoMDM-shaped events with drawn values in every
field (raw_payload: a generated, damaged or non-base64 plist), and hostile JSON: 100,000 nested
`[` (Python's parser recurses), non-UTF-8, huge numbers. The parser must refuse them itself,
not rely on the gateway's door checks.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.serde import AvroSerde
from services.gateway.checkin_parse import BadCheckin
from services.gateway.webhook import event_to_checkin
from tests.fuzz import plists
from tests.fuzz.fuzzing import FUZZ, peak_allocated, ran

SERDE = AvroSerde()
NOW_MS = 1_795_000_000_000
MEMORY_BOUND = 32 * 1024 * 1024

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=15,
)


def parses_or_refuses(body: bytes) -> None:
    """The property: a CheckinEvent the serde accepts, or BadCheckin with a reason."""
    try:
        record = event_to_checkin(body, NOW_MS, "acme")
    except BadCheckin as exc:
        assert str(exc)
        return
    SERDE.encode("CheckinEvent", record)
    assert record["tenant"] == "acme" and record["source"] == "webhook"


@st.composite
def nanomdm_events(draw: st.DrawFn) -> bytes:
    """NanoMDM's event.json shape with drawn values (valid, wrong-typed or missing)."""
    payload = draw(plists.plist_bytes())
    raw = draw(st.sampled_from(["b64", "garbage", "json"]))
    raw_payload: Any = (base64.b64encode(payload).decode() if raw == "b64"
                        else draw(st.text(max_size=30)) if raw == "garbage" else draw(JSON))
    inner = draw(st.fixed_dictionaries({"raw_payload": st.just(raw_payload)}, optional={
        "ids": st.fixed_dictionaries({}, optional={"id": JSON | st.just(plists.UDID)}) | JSON,
        "enrollment_id": JSON | st.just(plists.UDID),
        "udid": JSON | st.just(plists.UDID),
    }))
    event = {
        draw(st.sampled_from(["checkin_event", "acknowledge_event", "other"])): inner,
        "topic": draw(st.sampled_from(["mdm.TokenUpdate", "mdm.Connect", "x"])),
    }
    if draw(st.booleans()):
        event["event_id"] = draw(JSON)
    return json.dumps(event).encode()


@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    ran("webhook: arbitrary bytes")
    parses_or_refuses(body)


@FUZZ
@given(value=JSON)
def test_arbitrary_json(value: Any) -> None:
    ran("webhook: arbitrary JSON")
    parses_or_refuses(json.dumps(value).encode())


@FUZZ
@given(body=nanomdm_events())
def test_nanomdm_shaped_events(body: bytes) -> None:
    ran("webhook: NanoMDM-shaped events")
    parses_or_refuses(body)


HOSTILE = {
    "100,000 nested [": b"[" * 100_000 + b"]" * 100_000,
    "100,000 nested {\"a\":": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "deep inside raw_payload's event": b'{"checkin_event": {"ids": ' + b"[" * 50_000 + b"]"
                                       * 50_000 + b', "raw_payload": "AA=="}}',
    "not UTF-8": b'{"checkin_event": {"raw_payload": "\xff\xfe"}}',
    "a 5,000-digit number": b'{"event_id": ' + b"9" * 5_000 + b"}",
    "lone surrogate in raw_payload": b'{"checkin_event": {"raw_payload": "\\ud800"}}',
    "lone surrogate in ids.id": b'{"checkin_event": {"ids": {"id": "\\ud800"}, "raw_payload": "'
                                + base64.b64encode(plists.TOKEN_UPDATE) + b'"}}',
    "lone surrogate in event_id": b'{"event_id": "\\udfff", "checkin_event": {"raw_payload": "'
                                  + base64.b64encode(plists.TOKEN_UPDATE) + b'"}}',
    "a 1 MB event_id": b'{"event_id": "' + b"e" * 1_000_000 + b'", "checkin_event": '
                       b'{"raw_payload": "' + base64.b64encode(plists.TOKEN_UPDATE) + b'"}}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_refused_in_bounded_memory(name: str) -> None:
    ran("webhook: hostile JSON")
    body = HOSTILE[name]
    with pytest.raises(BadCheckin):
        event_to_checkin(body, NOW_MS, "acme")
    assert peak_allocated(lambda: event_to_checkin(body, NOW_MS, "acme")) < MEMORY_BOUND
