"""The device registry's rules, as pure functions over DeviceRecord-shaped dicts (no faust here).

A record is a dict with exactly the DeviceRecord schema's fields, so the faust table stores it
as JSON and the registry topic gets it Avro-encoded without translation. Every function returns
a *new* record (or None when nothing changes): the caller writes it to the table and publishes it.

Timestamps of the trifecta come from the event (`occurred_at`, when the MDM server received the
message), so a replayed or late event cannot make an older token look newer than it is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

Record = dict[str, Any]


class SkipReason(StrEnum):
    """Why a target gets a SKIPPED outcome instead of a job (CONTRACTS.md, outcomes table)."""

    UNKNOWN_ENROLLMENT = "unknown_enrollment"
    NO_TOKEN = "no_token"
    CHECKED_OUT = "checked_out"
    TOKEN_DEAD = "token_dead"
    #: Owned by another tenant, or by no tenant at all. Counted under its own name; the outcome
    #: says `unknown_enrollment` (see `reported`), so a tenant learns nothing of other tenants.
    FOREIGN_TENANT = "foreign_tenant"
    #: A bulk target with an outstanding push: it rides on that push (services/fanout/coalesce.py).
    COALESCED = "coalesced"
    #: A bulk target the correlator marked INACTIVE (silent too long; services/fanout/activity.py).
    INACTIVE = "inactive"

    @property
    def reported(self) -> SkipReason:
        """The reason written on the SKIPPED outcome."""
        return SkipReason.UNKNOWN_ENROLLMENT if self is SkipReason.FOREIGN_TENANT else self


def new_record(enrollment_id: str, now_ms: int) -> Record:
    """An enrollment seen for the first time: known, not pushable until a TokenUpdate."""
    return {
        "enrollment_id": enrollment_id,
        "tenant": "",
        "udid": None,
        "state": "AUTHENTICATED",
        "topic": None,
        "token_hex": None,
        "push_magic": None,
        "enrolled_at": None,
        "token_updated_at": None,
        "last_contact_at": None,
        "token_dead_since": None,
        "updated_at": now_ms,
    }


class CheckinRefusal(StrEnum):
    """Why a check-in is not applied to the registry (counted by reason)."""

    #: Names no tenant, for an enrollment no tenant owns: it could only make (or change) a
    #: record nobody may push to.
    NO_TENANT = "no_tenant"
    #: Names another tenant than the enrollment's owner (see `foreign_checkin`).
    FOREIGN_TENANT = "foreign_tenant"
    #: Neither Authenticate nor TokenUpdate, from an enrollment the registry does not know: the
    #: registry could push nothing to it, and a flood of invented ids must not grow it.
    UNKNOWN_ENROLLMENT = "unknown_enrollment"


#: The check-ins that may create a registry record (an enrollment starts with them).
ENROLLING = ("AUTHENTICATE", "TOKEN_UPDATE")


def checkin_refusal(current: Record | None, event: dict[str, Any]) -> CheckinRefusal | None:
    """Why `event` must not be applied to `current`, or None when it may be."""
    if foreign_checkin(current, event):  # an owned enrollment: naming none is foreign too
        return CheckinRefusal.FOREIGN_TENANT
    if not event.get("tenant"):
        return CheckinRefusal.NO_TENANT
    if current is None and event["message_type"] not in ENROLLING:
        return CheckinRefusal.UNKNOWN_ENROLLMENT
    return None


def clamp_future(at: int, now_ms: int, tolerance_ms: int) -> int | None:
    """`now_ms` when `at` lies more than `tolerance_ms` ahead of it, else None (keep `at`).

    A check-in cannot have happened after the fan-out received it; one stamped ahead of the
    fan-out's clock by more than clock skew explains (a server clock set years ahead, a forged
    record) would, kept as is, make every later TokenUpdate of that device look older and be
    ignored for as long as the stamp stays ahead. Clamping keeps what the check-in says (its
    token is most likely the device's current one) and only takes back the time it could not
    have had; the same goes for the time APNs says a token died. docs/fanout-bounds.md.
    """
    return now_ms if at - now_ms > tolerance_ms else None


def expired_pending(record: Record, now_ms: int, ttl_ms: int) -> bool:
    """True for an enrollment that authenticated but has had no token for `ttl_ms`.

    Such a record can never be pushed; left alone, every Authenticate of an unknown device (or
    of a forger holding a tenant's check-in credential) would add one forever. A device that
    does finish its enrollment sends its TokenUpdate seconds after the Authenticate, and one
    that comes back later authenticates again. `updated_at` is the fan-out's clock at the last
    change, so a late event's old `occurred_at` cannot make a fresh record look expired.
    """
    return (
        record["state"] == "AUTHENTICATED"
        and record["token_updated_at"] is None
        and now_ms - record["updated_at"] > ttl_ms
    )


def foreign_checkin(current: Record | None, event: dict[str, Any]) -> bool:
    """True when `event` comes from another tenant than the one owning the enrollment.

    The first check-in that names a tenant makes the enrollment that tenant's; from then on a
    check-in naming another tenant (or none) must not change the record: it would let one tenant
    take over, check out or re-point another tenant's device.
    """
    return current is not None and bool(current["tenant"]) and event.get("tenant") != \
        current["tenant"]


def apply_checkin(current: Record | None, event: dict[str, Any], now_ms: int) -> Record | None:
    """The record after one CheckinEvent, or None when the event changes nothing.

    - AUTHENTICATE starts a new enrollment: the old token, PushMagic and their times are gone
      (the device will send a fresh TokenUpdate); udid and topic are kept or taken from the event.
    - TOKEN_UPDATE sets the trifecta and makes the enrollment ENROLLED; `enrolled_at` is set by
      the first one only; it revives a dead token when it is newer than `token_dead_since`.
      One older than the current trifecta (a late duplicate) only counts as contact.
    - CHECK_OUT marks the enrollment CHECKED_OUT, keeping the trifecta as evidence.
    - An AUTHENTICATE or CHECK_OUT older than the current token's TokenUpdate is a replay or a
      late arrival (a restarted worker re-reads what it had not committed, and the 410s it
      re-reads may land first): it only counts as contact, so it cannot wipe or check out a
      newer enrollment, nor undo a 410 recorded after it.
    - Any message is a device contact. Contact from an enrollment never seen (a CheckOut
      included) is ignored: the registry knows nothing it could push to, the correlator reads
      contacts itself, and invented ids must not grow the registry (see `checkin_refusal`).
    """
    kind = event["message_type"]
    at: int = event["occurred_at"]
    if current is None and kind not in ENROLLING:
        return None
    record = dict(current) if current is not None else new_record(event["enrollment_id"], now_ms)
    updated = record["token_updated_at"]
    if kind in ("AUTHENTICATE", "CHECK_OUT") and updated is not None and at < updated:
        kind = "STALE"
    if event.get("tenant"):
        record["tenant"] = event["tenant"]
    if event.get("udid"):
        record["udid"] = event["udid"]
    if kind == "AUTHENTICATE":
        record.update(
            state="AUTHENTICATED", token_hex=None, push_magic=None, enrolled_at=None,
            token_updated_at=None, token_dead_since=None,
            topic=event.get("topic") or record["topic"],
        )
    elif kind == "TOKEN_UPDATE":
        _apply_token_update(record, event, at)
    elif kind == "CHECK_OUT":
        record["state"] = "CHECKED_OUT"
    last = record["last_contact_at"]
    record["last_contact_at"] = at if last is None else max(last, at)
    if record == current:
        return None
    record["updated_at"] = now_ms
    return record


def _apply_token_update(record: Record, event: dict[str, Any], at: int) -> None:
    updated = record["token_updated_at"]
    if updated is not None and at < updated:
        return
    record.update(
        state="ENROLLED",
        topic=event.get("topic") or record["topic"],
        token_hex=event.get("token_hex") or record["token_hex"],
        push_magic=event.get("push_magic") or record["push_magic"],
        token_updated_at=at,
    )
    if record["enrolled_at"] is None:
        record["enrolled_at"] = at
    dead = record["token_dead_since"]
    if dead is not None and at > dead:
        record["token_dead_since"] = None


def mark_token_dead(
    current: Record | None, token_hex: str | None, dead_since: int, now_ms: int
) -> Record | None:
    """The record after APNs said 410 for `token_hex` (valid until `dead_since`), or None.

    Only the current token can die: a 410 for a token the device has since replaced says
    nothing about the new one, and a TokenUpdate newer than `dead_since` already proves the
    token alive again.
    """
    if current is None or not token_hex or current["token_hex"] != token_hex:
        return None
    updated = current["token_updated_at"]
    if updated is not None and updated > dead_since:
        return None
    if current["token_dead_since"] == dead_since:
        return None
    return {**current, "token_dead_since": dead_since, "updated_at": now_ms}


def skip_reason(record: Record | None, tenant: str, kind: str) -> SkipReason | None:
    """Why `record` cannot be pushed for a request of `tenant` and `kind`, or None if it can.

    An enrollment owned by another tenant is FOREIGN_TENANT (reported unknown): a tenant must not
    be able to push to (or learn about) another tenant's devices. A record with no tenant belongs
    to nobody, so no tenant may push to it.
    """
    if record is None:
        return SkipReason.UNKNOWN_ENROLLMENT
    if record["tenant"] != tenant:
        return SkipReason.FOREIGN_TENANT
    if record["state"] == "CHECKED_OUT":
        return SkipReason.CHECKED_OUT
    if record["state"] != "ENROLLED" or not record["token_hex"] or not record["topic"]:
        return SkipReason.NO_TOKEN
    if kind == "MDM" and not record["push_magic"]:
        return SkipReason.NO_TOKEN
    if record["token_dead_since"] is not None:
        return SkipReason.TOKEN_DEAD
    return None
