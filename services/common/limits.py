"""Input limits and validation: what an id, token, topic or request may look like.

One copy for every place data enters (gateway, SDK, fan-out, sender): a value that passes here
fits a Kafka record, an APNs URL and a registry row. Each check raises `InvalidInput` with a
reason a caller can show as is (the gateway answers it as 400, a consumer dead-letters with it).

Why these bounds:
- enrollment ids are a UDID (25-40 chars), an EnrollmentID, or `UDID:UserID` (+37); 256 leaves
  room and keeps a registry record far below Kafka's 1 MB;
- APNs device tokens are 32 bytes today and Apple reserves growth to 100: even-length hex of
  64..200 characters. Anything else would reach the APNs URL and be refused by libcurl;
- push topics are `com.apple.mgmt.<…>` for MDM and a bundle id (reverse DNS) for APS pushes;
- JSON depth is checked before parsing, because Python's parser recurses and a body of 100,000
  `[` would exhaust the stack.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.common.errors import MdmPushError

MAX_TENANT_LEN = 64
MAX_ENROLLMENT_ID_LEN = 256
MAX_UDID_LEN = 128
MIN_TOKEN_HEX_LEN = 64
MAX_TOKEN_HEX_LEN = 200
MAX_TOPIC_LEN = 255
MAX_PUSH_MAGIC_LEN = 256
MAX_COMMAND_UUID_LEN = 256
MAX_SHORT_TEXT_LEN = 128  # status, message types, command types, sources, principals
MAX_TARGETS_PER_REQUEST = 10_000
# The ids of one request together: 10,000 ids of the longest allowed length would make a 2.6 MB
# record, which Kafka (1 MB by default) refuses; this leaves room for the other fields.
MAX_TARGETS_BYTES = 800_000
MAX_JSON_DEPTH = 32
MAX_APS_PAYLOAD_BYTES = 4096  # APNs' own limit for a notification payload

TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Printable ASCII without separators used in URLs and key formats (',', '/', '?', '#', space).
ENROLLMENT_ID_RE = re.compile(r"[A-Za-z0-9._:@+=-]+")
TOKEN_HEX_RE = re.compile(r"[0-9a-fA-F]+")
COMMAND_TYPE_RE = re.compile(r"[A-Za-z0-9_.-]{0,64}")
TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+")
MDM_TOPIC_PREFIX = "com.apple.mgmt."


class InvalidInput(MdmPushError):
    """A value outside the limits; `field` names it and `str()` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _text(field: str, value: Any, max_len: int, pattern: re.Pattern[str] | None) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(field, "must be a non-empty string")
    if len(value) > max_len:
        raise InvalidInput(field, f"{len(value)} characters, at most {max_len} allowed")
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidInput(field, f"must match {pattern.pattern}")
    return value


def check_short_text(field: str, value: Any, max_len: int = MAX_SHORT_TEXT_LEN) -> str:
    """Free text that becomes an id or label (an event id, a source): non-empty, at most
    `max_len` characters, and valid Unicode: JSON can carry a lone surrogate (`"\\ud800"`) that
    no UTF-8 Kafka record can, and it would fail only later, at encoding."""
    text = _text(field, value, max_len, None)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(field, f"not valid Unicode ({exc.reason})") from exc
    return text


def check_tenant(value: Any) -> str:
    return _text("tenant", value, MAX_TENANT_LEN, TENANT_RE)


def check_enrollment_id(value: Any, field: str = "enrollment_id") -> str:
    return _text(field, value, MAX_ENROLLMENT_ID_LEN, ENROLLMENT_ID_RE)


def check_udid(value: Any) -> str:
    return _text("udid", value, MAX_UDID_LEN, ENROLLMENT_ID_RE)


def check_token_hex(value: Any) -> str:
    """An APNs device token as hex: even length, 64..200 characters."""
    token = _text("token_hex", value, MAX_TOKEN_HEX_LEN, TOKEN_HEX_RE)
    if len(token) < MIN_TOKEN_HEX_LEN or len(token) % 2:
        raise InvalidInput("token_hex", f"{len(token)} hex characters; an APNs token has an "
                           f"even number from {MIN_TOKEN_HEX_LEN} to {MAX_TOKEN_HEX_LEN}")
    return token


def check_topic(value: Any, *, mdm: bool = False) -> str:
    """A push topic: reverse DNS; with `mdm`, one under com.apple.mgmt."""
    topic = _text("topic", value, MAX_TOPIC_LEN, TOPIC_RE)
    if mdm and not topic.startswith(MDM_TOPIC_PREFIX):
        raise InvalidInput("topic", f"an MDM push topic starts with {MDM_TOPIC_PREFIX}")
    return topic


def check_command_type(value: Any) -> str:
    """Informational command type (install_app, wipe, ...): may be empty."""
    if not isinstance(value, str) or not COMMAND_TYPE_RE.fullmatch(value):
        raise InvalidInput("command_type", f"must match {COMMAND_TYPE_RE.pattern}")
    return value


def check_targets(ids: Sequence[Any], max_targets: int = MAX_TARGETS_PER_REQUEST) -> list[str]:
    """A request's explicit targets: 1..max_targets valid enrollment ids that fit one record."""
    if len(ids) > max_targets:
        raise InvalidInput("enrollment_ids", f"{len(ids)} targets, at most {max_targets} "
                           "per request")
    checked = [check_enrollment_id(i, "enrollment_ids[]") for i in ids]
    total = sum(len(i) for i in checked)  # ASCII by ENROLLMENT_ID_RE: characters are bytes
    if total > MAX_TARGETS_BYTES:
        raise InvalidInput("enrollment_ids", f"{total} bytes of ids, at most {MAX_TARGETS_BYTES} "
                           "per request (a record must fit Kafka's 1 MB limit): split it")
    return checked


def json_depth(text: bytes | str) -> int:
    """Deepest nesting of objects/arrays in a JSON text, without parsing it (no recursion).

    Brackets inside strings do not count. Malformed text gives some number: the parser that runs
    afterwards reports what is wrong with it.
    """
    data = text.encode() if isinstance(text, str) else text
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def check_json_depth(text: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> None:
    depth = json_depth(text)
    if depth > max_depth:
        raise InvalidInput("body", f"JSON nested {depth} deep, at most {max_depth} allowed")


def _optional(record: Mapping[str, Any], field: str, max_len: int) -> None:
    value = record.get(field)
    if value is not None and (not isinstance(value, str) or len(value) > max_len):
        raise InvalidInput(field, f"must be a string of at most {max_len} characters")


#: Tenants and push topics already found valid: a fleet has few of each, and the check-in paths
#: (gateway, fan-out, correlator) check every check-in's; the regex is run once per value.
#: Bounded: cleared when full (a flood of distinct values only costs their checks).
_VALID_TENANTS: set[str] = set()
_VALID_TOPICS: set[str] = set()
_VALID_KEPT = 4096
#: The optional text fields of a CheckinEvent and their longest length.
_CHECKIN_TEXTS = (("push_magic", MAX_PUSH_MAGIC_LEN), ("command_uuid", MAX_COMMAND_UUID_LEN),
                  *((field, MAX_SHORT_TEXT_LEN) for field in
                    ("status", "raw_message_type", "event_id", "source", "principal")))


def _known(valid: set[str], value: Any, check: Callable[[Any], str]) -> None:
    """`check(value)` unless `value` passed it before."""
    if type(value) is str and value in valid:
        return
    check(value)
    if len(valid) >= _VALID_KEPT:
        valid.clear()
    valid.add(value)


def check_checkin_event(record: Mapping[str, Any]) -> None:
    """A CheckinEvent record (dict as the Avro schema has it) within every limit. On every
    check-in of the hot paths: what repeats (tenant, topic; a udid equal to the checked
    enrollment id) is not checked twice."""
    get = record.get
    eid = check_enrollment_id(get("enrollment_id"))
    tenant = get("tenant")
    if tenant:
        _known(_VALID_TENANTS, tenant, check_tenant)
    udid = get("udid")
    if udid is not None and not (udid == eid and len(eid) <= MAX_UDID_LEN):
        check_udid(udid)
    token = get("token_hex")
    if token is not None:
        check_token_hex(token)
    topic = get("topic")
    if topic is not None:
        _known(_VALID_TOPICS, topic, check_topic)
    for field, max_len in _CHECKIN_TEXTS:
        value = get(field)
        if value is not None and (not isinstance(value, str) or len(value) > max_len):
            raise InvalidInput(field, f"must be a string of at most {max_len} characters")


def check_notification_request(record: Mapping[str, Any]) -> None:
    """A NotificationRequest record within every limit (targets, tenant, payload size)."""
    check_tenant(record.get("tenant"))
    if not record.get("target_all"):
        ids = record.get("enrollment_ids") or []
        if not ids:
            raise InvalidInput("enrollment_ids", "a request needs targets or target_all")
        check_targets(ids)
    payload = record.get("aps_payload")
    if payload is not None:
        if not isinstance(payload, str) or len(payload.encode()) > MAX_APS_PAYLOAD_BYTES:
            raise InvalidInput("aps_payload", f"at most {MAX_APS_PAYLOAD_BYTES} bytes")
        check_json_depth(payload)
    check_command_type(record.get("command_type", ""))
    # Job ids derive from it: an empty one would make every such request's jobs collide. (Every
    # NotificationRequest record has one; a partial dict without it is checked for the rest.)
    if "request_id" in record:
        check_short_text("request_id", record["request_id"])
    for field in ("source", "principal"):
        _optional(record, field, MAX_SHORT_TEXT_LEN)


def check_push_job(record: Mapping[str, Any]) -> None:
    """A PushJob record the sender can put on an APNs URL and headers as is.

    The fan-out only writes jobs that pass these checks; the sender checks again because anything
    with write access to the jobs topics can publish one, and an invalid job must end as its own
    FAILED outcome instead of reaching APNs (or, worse, counting against its certificate).
    """
    check_enrollment_id(record.get("enrollment_id"))
    if record.get("tenant"):
        check_tenant(record["tenant"])
    check_token_hex(record.get("token_hex"))
    check_topic(record.get("topic"))
    _optional(record, "push_magic", MAX_PUSH_MAGIC_LEN)
    payload = record.get("aps_payload")
    if payload is not None and len(payload.encode()) > MAX_APS_PAYLOAD_BYTES:
        raise InvalidInput("aps_payload", f"at most {MAX_APS_PAYLOAD_BYTES} bytes")
