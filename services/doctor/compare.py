"""The device's trifecta (from its sysdiagnose) against the registry's, one verdict per item.

Each mismatch names the cause the Apple seed gives for it and the one step that fixes it, because
the person reading this is usually on a support call, not reading the seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from services.common.registry_view import DeviceRecord, records_of_udid
from services.doctor.sysdiagnose import DeviceSide

SELF_HEALING_HOURS = 25


class Verdict(StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    MISSING = "missing"


@dataclass(frozen=True, slots=True)
class Check:
    """One item of the trifecta: both values as shown to the user, the verdict, what to do."""

    item: str
    verdict: Verdict
    device: str | None
    registry: str | None
    next_step: str = ""


@dataclass(frozen=True, slots=True)
class SysdiagnoseReport:
    """The device side, the registry record it was compared with (if any) and the verdicts."""

    device: DeviceSide
    record: DeviceRecord | None
    checks: tuple[Check, ...] = ()
    other_enrollments: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.record is not None and all(c.verdict is Verdict.OK for c in self.checks)


def token_sha256(token_hex: str | None) -> bytes | None:
    """SHA-256 of the raw token bytes, as the device records it; None if the hex is unusable."""
    if not token_hex:
        return None
    try:
        return hashlib.sha256(bytes.fromhex(token_hex)).digest()
    except ValueError:
        return None


def select_record(
    device: DeviceSide,
    registry: dict[str, DeviceRecord],
    enrollment_id: str | None = None,
    udid: str | None = None,
) -> tuple[DeviceRecord | None, list[DeviceRecord]]:
    """The record to compare with, and the other records of the same device.

    Without an id, the device is recognised by its token hash or its PushMagic (each identifies
    one enrollment), preferring live and recent records.
    """
    if enrollment_id is not None:
        record = registry.get(enrollment_id)
        same = records_of_udid(registry, record["udid"]) if record and record.get("udid") else []
    elif udid is not None:
        same = records_of_udid(registry, udid)
        record = same[0] if same else None
    else:
        matches = [r for r in registry.values()
                   if (device.token_hash is not None
                       and token_sha256(r.get("token_hex")) == device.token_hash)
                   or (device.push_magic is not None and r.get("push_magic") == device.push_magic)]
        matches.sort(key=lambda r: (r["state"] != "CHECKED_OUT", r["updated_at"]), reverse=True)
        record = matches[0] if matches else None
        same = records_of_udid(registry, record["udid"]) if record and record.get("udid") else []
    others = [r for r in same if record is None or r["enrollment_id"] != record["enrollment_id"]]
    return record, others


def build_report(
    device: DeviceSide,
    registry: dict[str, DeviceRecord],
    enrollment_id: str | None = None,
    udid: str | None = None,
) -> SysdiagnoseReport:
    """Compare with the registry's record for the device."""
    record, others = select_record(device, registry, enrollment_id, udid)
    ids = tuple(o["enrollment_id"] for o in others)
    if record is None:
        wanted = (f"enrollment {enrollment_id}" if enrollment_id else f"UDID {udid}" if udid
                  else "this device's token hash or PushMagic")
        return SysdiagnoseReport(device, None, other_enrollments=ids,
                                 notes=(f"no registry record for {wanted}: the device's own "
                                        "values only",))
    return SysdiagnoseReport(device, record, compare(device, record, others), ids)


def compare(device: DeviceSide, record: DeviceRecord,
            others: list[DeviceRecord] | None = None) -> tuple[Check, ...]:
    """Topic, token and PushMagic verdicts, in the order the Apple seed checks them."""
    return (
        _topic(device, record.get("topic")),
        _token(device, record.get("token_hex")),
        _magic(device, record, others or []),
    )


def _topic(device: DeviceSide, registry_topic: str | None) -> Check:
    shown = ", ".join(device.distinct_topics) or None
    if not device.topics:
        return Check("push topic", Verdict.MISSING, None, registry_topic,
                     "no profile on the device carries an MDM Topic: the MDM profile is gone "
                     "(unenrolled or wiped without CheckOut) — re-enroll the device")
    if registry_topic is None:
        return Check("push topic", Verdict.MISSING, shown, None,
                     "the registry has no topic for this enrollment: it never completed a "
                     "TokenUpdate — wait for one or re-enroll the device")
    if registry_topic in device.distinct_topics:
        return Check("push topic", Verdict.OK, shown, registry_topic)
    return Check("push topic", Verdict.MISMATCH, shown, registry_topic,
                 f"the device listens on topic {shown}; your certificate's topic is "
                 f"{registry_topic}: the push certificate was replaced instead of renewed — "
                 "renew the original certificate (same topic) or re-enroll the device")


def _token(device: DeviceSide, token_hex: str | None) -> Check:
    shown = device.token_hash.hex() if device.token_hash else None
    if device.token_hash is None:
        return Check("push token (SHA-256)", Verdict.MISSING, None, token_hex,
                     "the device records no LastPushTokenHash: it never registered for MDM "
                     "pushes — re-enroll the device")
    if not token_hex:
        return Check("push token (SHA-256)", Verdict.MISSING, shown, None,
                     "the registry has no token for this enrollment: wait for the device's "
                     "TokenUpdate or re-enroll")
    digest = token_sha256(token_hex)
    registry_shown = f"{digest.hex()} (token {token_hex})" if digest else f"invalid {token_hex!r}"
    if digest == device.token_hash:
        return Check("push token (SHA-256)", Verdict.OK, shown, registry_shown)
    return Check("push token (SHA-256)", Verdict.MISMATCH, shown, registry_shown,
                 "the device's token changed (backup/restore): wait for its TokenUpdate or "
                 "re-enroll; pushes to the stored token never arrive")


def _magic(device: DeviceSide, record: DeviceRecord, others: list[DeviceRecord]) -> Check:
    stored = record.get("push_magic")
    if device.push_magic is None:
        return Check("push magic", Verdict.MISSING, None, stored,
                     "MDM.plist has no PushMagic: the device is not enrolled — re-enroll it")
    if stored is None:
        return Check("push magic", Verdict.MISSING, device.push_magic, None,
                     "the registry has no PushMagic for this enrollment: wait for the device's "
                     "TokenUpdate or re-enroll")
    if stored == device.push_magic:
        return Check("push magic", Verdict.OK, device.push_magic, stored)
    live = next((o["enrollment_id"] for o in others if o.get("push_magic") == device.push_magic),
                None)
    which = (f"enrollment {live} holds the device's PushMagic, so delete the stale enrollment "
             f"{record['enrollment_id']}" if live else "delete the stale enrollment")
    return Check("push magic", Verdict.MISMATCH, device.push_magic, stored,
                 f"duplicate enrollment records: {which}; the device self-heals "
                 f"{SELF_HEALING_HOURS} h after a wrong-magic push")
