"""Fuzzing the check-in plist parser: any body ends in a CheckinEvent record or BadCheckin.

A record that comes out must also be one the serde can write (the gateway publishes it as is
after the limits check). Hostile shapes beyond what random bytes find are fed by hand: shared
sub-objects (exponential as a tree), cycles, 100,000-deep XML, deep binary nesting (plistlib
recurses), a trailer claiming 2**40 objects, and an entity-expansion bomb.
"""

from __future__ import annotations

import plistlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.serde import AvroSerde
from services.gateway.checkin_parse import BadCheckin, checkin_event, parse_plist
from tests.fuzz import plists
from tests.fuzz.fuzzing import FUZZ, peak_allocated, ran

SERDE = AvroSerde()
NOW_MS = 1_795_000_000_000
#: Far above what parsing a few-KB body needs, far below what a bomb would take.
MEMORY_BOUND = 32 * 1024 * 1024


def parses_or_refuses(body: bytes) -> None:
    """The property: a CheckinEvent the serde accepts, or BadCheckin with a reason."""
    try:
        record = checkin_event(parse_plist(body), NOW_MS, tenant="acme", source="checkin")
    except BadCheckin as exc:
        assert str(exc)
        return
    SERDE.encode("CheckinEvent", record)
    assert record["message_type"] in {"AUTHENTICATE", "TOKEN_UPDATE", "CHECK_OUT", "OTHER",
                                      "COMMAND_REPORT"}


@FUZZ
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(body: bytes) -> None:
    ran("checkin plist: arbitrary bytes")
    parses_or_refuses(body)


@FUZZ
@given(body=plists.plist_bytes())
def test_generated_and_damaged_plists(body: bytes) -> None:
    ran("checkin plist: generated/damaged plists")
    parses_or_refuses(body)


@FUZZ
@given(body=plists.plist_bytes(plists.PLIST_VALUES))
def test_any_plist_value(body: bytes) -> None:
    """Top-level arrays, strings, numbers: refused as not a dictionary."""
    ran("checkin plist: any top-level value")
    parses_or_refuses(body)


@FUZZ
@given(prefix=st.sampled_from([b"bplist00", b"<?xml version=\"1.0\"?><plist>", b"<plist>"]),
       rest=st.binary(max_size=200))
def test_plist_headers_with_garbage(prefix: bytes, rest: bytes) -> None:
    ran("checkin plist: plist header + garbage")
    parses_or_refuses(prefix + rest)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "shared sub-objects (2**64 tree paths)": plists.dag_plist,
    "cycle": plists.cyclic_plist,
    "100,000-deep XML": plists.deep_xml_plist,
    "5,000-deep binary": plists.deep_binary_plist,
    "trailer claims 2**40 objects": plists.huge_count_plist,
    "entity expansion": lambda: plists.BILLION_LAUGHS,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_plists_refused_in_bounded_memory(name: str) -> None:
    ran("checkin plist: hostile shapes")
    body = HOSTILE[name]()
    with pytest.raises(BadCheckin):
        checkin_event(parse_plist(body), NOW_MS)
    assert peak_allocated(lambda: parse_plist(body)) < MEMORY_BOUND


def test_a_real_token_update_still_parses() -> None:
    """The fuzzing's baseline: a well-formed TokenUpdate gives its event."""
    body = plistlib.dumps({"MessageType": "TokenUpdate", "UDID": plists.UDID,
                          "Token": plists.TOKEN, "Topic": plists.TOPIC, "PushMagic": "m"})
    record = checkin_event(parse_plist(body), NOW_MS, tenant="acme")
    assert (record["enrollment_id"], record["token_hex"]) == (plists.UDID, plists.TOKEN.hex())
