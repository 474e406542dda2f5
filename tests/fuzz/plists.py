"""Property-list strategies and hand-built hostile plists shared by the plist fuzz targets."""

from __future__ import annotations

import plistlib
import struct
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

UDID = "00008030-0000000000000001"
TOKEN = bytes(range(32))
TOPIC = "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001"
TOKEN_UPDATE = plistlib.dumps({"MessageType": "TokenUpdate", "UDID": UDID, "Token": TOKEN,
                               "Topic": TOPIC, "PushMagic": "magic"})
CHECKIN_KEYS = ["MessageType", "UDID", "EnrollmentID", "UserID", "EnrollmentUserID", "Token",
                "Topic", "PushMagic", "Status", "CommandUUID", "UnlockToken", "Topic", "Payload"]

# Values plistlib can write: no control characters in strings (XML cannot carry them),
# datetimes without microseconds, ints within 64 bits.
TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
_SCALARS = (
    TEXT | st.binary(max_size=40) | st.booleans() | st.floats(allow_nan=False)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0))
    | st.sampled_from(["Authenticate", "TokenUpdate", "CheckOut", "Acknowledged", "Idle",
                       "Error", "NotNow", UDID, TOPIC]) | st.just(TOKEN)
)
PLIST_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(CHECKIN_KEYS) | TEXT, inner, max_size=6),
    max_leaves=20,
)
MESSAGES = st.dictionaries(st.sampled_from(CHECKIN_KEYS), PLIST_VALUES, max_size=8)


@st.composite
def plist_bytes(draw: st.DrawFn, values: st.SearchStrategy[Any] = MESSAGES) -> bytes:
    """A well-formed XML or binary plist of a drawn value, then maybe damaged."""
    fmt = draw(st.sampled_from([plistlib.FMT_XML, plistlib.FMT_BINARY]))
    data = bytearray(plistlib.dumps(draw(values), fmt=fmt, sort_keys=False))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["cut", "flip", "insert"]))
        if op == "cut":
            del data[at:]
        elif op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def binary_plist(objects: list[bytes], ref_size: int = 1, top: int = 0) -> bytes:
    """A binary plist of raw object encodings (refs of `ref_size` bytes), with a valid trailer."""
    body = bytearray(b"bplist00")
    offsets = []
    for obj in objects:
        offsets.append(len(body))
        body += obj
    table = len(body)
    for off in offsets:
        body += struct.pack(">I", off)
    body += struct.pack(">6xBBQQQ", 4, ref_size, len(objects), top, table)
    return bytes(body)


def dag_plist(levels: int = 64) -> bytes:
    """2**levels paths through `levels` shared arrays: tiny, but exponential to walk as a tree."""
    return binary_plist([bytes([0xA2, i + 1, i + 1]) for i in range(levels)] + [b"\x08"])


def cyclic_plist() -> bytes:
    """A dictionary whose value is an array containing that same dictionary."""
    # 0: dict {1: 2}; 1: "Topic" key; 2: array [0]
    return binary_plist([bytes([0xD1, 1, 2]), b"\x55Topic", bytes([0xA1, 0])])


def deep_xml_plist(depth: int = 100_000) -> bytes:
    """A dictionary nested `depth` deep in arrays (plistlib's XML reader does not recurse)."""
    return (b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>A</key>'
            + b"<array>" * depth + b"</array>" * depth + b"</dict></plist>")


def deep_binary_plist(depth: int = 5_000) -> bytes:
    """Arrays nested `depth` deep in binary form (plistlib's binary reader recurses)."""
    return binary_plist([bytes([0xA1]) + struct.pack(">H", i + 1) for i in range(depth)]
                        + [b"\x08"], ref_size=2)


def huge_count_plist() -> bytes:
    """A trailer claiming 2**40 objects and an array claiming 2**30 refs: nothing behind them."""
    body = b"bplist00" + b"\xaf\x13\x40\x00\x00\x00" + b"\x00" * 8
    return body + struct.pack(">6xBBQQQ", 8, 8, 2**40, 0, 8)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE plist [<!ENTITY a "aaaaaaaaaa">'
    + b"".join(b'<!ENTITY %c "%s">' % (ord("b") + i, (b"&%c;" % (ord("a") + i)) * 10)
               for i in range(9))
    + b']><plist version="1.0"><dict><key>UDID</key><string>&j;</string></dict></plist>'
)
