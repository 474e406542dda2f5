"""Validation of one provider-API request, in Apple's terms, as a pure function.

Kept apart from the HTTP/2 plumbing so every rule is readable in one place and testable without
a socket. It works on the raw ``bytes`` header pairs h2 hands over (no decoding on the hot path).

Rules (Apple's "Sending notification requests to APNs" and "Handling error responses"):

- method other than POST → 405 MethodNotAllowed; path other than ``/3/device/<token>`` → 404
  BadPath; ``/3/device/`` without a token → 400 MissingDeviceToken; a token that is not 64 to 200
  hex digits → 400 BadDeviceToken.
- a repeated ``apns-*`` header → 400 DuplicateHeaders.
- ``apns-id`` not a canonical UUID → 400 BadMessageId (missing: the simulator makes one up and
  returns it, like APNs).
- ``apns-topic``: missing → the certificate's topic (APNs does this for single-topic
  certificates; 400 MissingTopic when the connection has no certificate); not printable ASCII
  → 400 BadTopic; different from the certificate's topic → 400 TopicDisallowed.
- ``apns-push-type``: unknown value, or anything but ``mdm`` on an MDM topic
  (``com.apple.mgmt.…``) → 400 InvalidPushType. Missing: inferred (``mdm`` for MDM topics,
  ``alert`` otherwise) because APNs still accepts legacy MDM servers that never send it, unless
  the simulator is configured to require it (then 400 InvalidPushType).
- ``apns-priority``: 1, 5 or 10 (default 10) else 400 BadPriority.
- ``apns-expiration``: a non-negative integer (epoch seconds) else 400 BadExpirationDate.
- ``apns-collapse-id`` longer than 64 bytes → 400 BadCollapseId.
- empty body → 400 PayloadEmpty; larger than the limit (4096 bytes; 5120 for VoIP) → 413
  PayloadTooLarge.
- MDM topics: the body must be exactly the JSON object ``{"mdm": "<PushMagic>"}``. Apple
  documents no reason for a malformed payload; for the device a push without a string ``mdm``
  key carries nothing (mdmclient wakes on that key alone), so the simulator answers the closest
  documented reason, 400 PayloadEmpty (:data:`MALFORMED_MDM_PAYLOAD_REASON`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "MALFORMED_MDM_PAYLOAD_REASON",
    "MAX_PAYLOAD",
    "MAX_VOIP_PAYLOAD",
    "MDM_TOPIC_PREFIX",
    "PUSH_TYPES",
    "Rejection",
    "ValidRequest",
    "validate",
]

MDM_TOPIC_PREFIX = "com.apple.mgmt."
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
MALFORMED_MDM_PAYLOAD_REASON = "PayloadEmpty"

PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "complication",
        "controls",
        "fileprovider",
        "liveactivity",
        "location",
        "mdm",
        "pushtotalk",
        "voip",
        "widgets",
    }
)

_PATH_PREFIX = b"/3/device/"
_TOKEN = re.compile(rb"[0-9a-fA-F]{64,200}")
_UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOPIC = re.compile(rb"[!-~]{1,255}")
_DIGITS = re.compile(rb"[0-9]{1,12}")
_PRIORITIES = {b"10": 10, b"5": 5, b"1": 1}
#: The headers validate() reads, by their place in its list of values.
_FIELDS = {
    name: slot
    for slot, name in enumerate(
        (
            b":method",
            b":path",
            b"apns-id",
            b"apns-topic",
            b"apns-push-type",
            b"apns-priority",
            b"apns-expiration",
            b"apns-collapse-id",
        )
    )
}
_FIRST_APNS_SLOT = 2
#: The usual MDM payload, ``{"mdm":"<printable ASCII>"}``: certainly valid, no JSON parse needed.
_PLAIN_MDM_PAYLOAD = re.compile(
    rb'\{[ \t\n\r]*"mdm"[ \t\n\r]*:[ \t\n\r]*"[ !#-\[\]-~]*"[ \t\n\r]*\}'
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request APNs refuses: HTTP status and Apple's reason string.

    ``apns_id`` is the request's own id when it had a valid one, so the answer can echo it.
    """

    status: int
    reason: str
    apns_id: bytes | None = None


@dataclass(frozen=True, slots=True)
class ValidRequest:
    """A well-formed push request, normalised (lower-case token, defaults applied)."""

    token_hex: str
    topic: str
    push_type: str
    priority: int
    expiration: int | None
    apns_id: bytes | None
    collapse_id: str | None


def _path_token(path: bytes | None) -> bytes | Rejection:
    if path is None or not path.startswith(_PATH_PREFIX):
        return Rejection(404, "BadPath")
    token = path[len(_PATH_PREFIX) :]
    if not token:
        return Rejection(400, "MissingDeviceToken")
    if b"/" in token or b"?" in token:
        return Rejection(404, "BadPath")
    if _TOKEN.fullmatch(token) is None:
        return Rejection(400, "BadDeviceToken")
    return token


def _mdm_payload_ok(body: bytes) -> bool:
    if _PLAIN_MDM_PAYLOAD.fullmatch(body) is not None:
        return True
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("mdm"), str)


def validate(
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    cert_topic: str | None,
    *,
    require_push_type: bool = False,
) -> ValidRequest | Rejection:
    """Check one request against Apple's rules (see the module doc); first failure wins."""
    found: list[bytes | None] = [None] * 8
    other_apns: set[bytes] | None = None
    for name, value in headers:
        slot = _FIELDS.get(name)
        if slot is None:
            if name[:5] == b"apns-":  # an apns-* header the simulator ignores: still unique
                if other_apns is None:
                    other_apns = {name}
                elif name in other_apns:
                    return Rejection(400, "DuplicateHeaders")
                else:
                    other_apns.add(name)
            continue
        if slot >= _FIRST_APNS_SLOT and found[slot] is not None:
            return Rejection(400, "DuplicateHeaders")
        found[slot] = value  # a repeated pseudo-header: the last one counts
    method, path, apns_id, topic, push_type, priority, expiration, collapse = found

    if method != b"POST":
        return Rejection(405, "MethodNotAllowed")
    token = _path_token(path)
    if isinstance(token, Rejection):
        return token
    if apns_id is not None and _UUID.fullmatch(apns_id) is None:
        return Rejection(400, "BadMessageId")

    def reject(status: int, reason: str) -> Rejection:
        return Rejection(status, reason, apns_id)

    if topic is None:
        if cert_topic is None:
            return reject(400, "MissingTopic")
        topic_str = cert_topic
    elif _TOPIC.fullmatch(topic) is None:
        return reject(400, "BadTopic")
    else:
        topic_str = topic.decode()
        if cert_topic is not None and topic_str != cert_topic:
            return reject(400, "TopicDisallowed")
    is_mdm = topic_str.startswith(MDM_TOPIC_PREFIX)

    if push_type is None:
        if require_push_type:
            return reject(400, "InvalidPushType")
        push_type_str = "mdm" if is_mdm else "alert"
    else:
        push_type_str = push_type.decode("ascii", "replace")
        if push_type_str not in PUSH_TYPES or is_mdm != (push_type_str == "mdm"):
            return reject(400, "InvalidPushType")

    prio = 10
    if priority is not None:
        known = _PRIORITIES.get(priority)
        if known is None:
            return reject(400, "BadPriority")
        prio = known

    exp: int | None = None
    if expiration is not None:
        if _DIGITS.fullmatch(expiration) is None:
            return reject(400, "BadExpirationDate")
        exp = int(expiration)

    collapse_str: str | None = None
    if collapse is not None:
        if len(collapse) > 64:
            return reject(400, "BadCollapseId")
        collapse_str = collapse.decode("utf-8", "replace")

    if not body:
        return reject(400, "PayloadEmpty")
    if len(body) > (MAX_VOIP_PAYLOAD if push_type_str == "voip" else MAX_PAYLOAD):
        return reject(413, "PayloadTooLarge")
    if is_mdm and not _mdm_payload_ok(body):
        return reject(400, MALFORMED_MDM_PAYLOAD_REASON)

    return ValidRequest(
        token_hex=token.decode().lower(),
        topic=topic_str,
        push_type=push_type_str,
        priority=prio,
        expiration=exp,
        apns_id=apns_id,
        collapse_id=collapse_str,
    )
