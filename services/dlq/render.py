"""Dead letters as text for an operator's terminal, with device secrets masked.

A device token and a PushMagic are what it takes to push to a device, so `dlq show` never
prints either in full (only enough to tell two apart), and undecodable bytes, which may hold
them, are shown as their size and digest, never as content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from services.common.catalogue import Topics
from services.dlq.records import DeadLetter
from services.dlq.select import Group
from services.doctor.times import iso

SECRET_FIELDS = ("token_hex", "push_magic")
#: Characters of a secret kept at each end: enough to match it against a registry record.
KEEP = 4


def mask(secret: str | None) -> str | None:
    """`abcd…(64)…wxyz`: the ends and the length, never the value."""
    if secret is None:
        return None
    if len(secret) <= 3 * KEEP:
        return f"…({len(secret)})"
    return f"{secret[:KEEP]}…({len(secret)})…{secret[-KEEP:]}"


def masked(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` with its secret fields masked, in nested records too."""
    return {k: mask(v) if k in SECRET_FIELDS and isinstance(v, str)
            else masked(v) if isinstance(v, dict) else v
            for k, v in record.items()}


def digest(data: bytes) -> str:
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


def render_groups(groups: Iterable[Group]) -> str:
    lines = [f"{'count':>7} {'jobs':>7}  {'service':<10} {'source topic':<34} "
             f"{'first':<24} {'last':<24} reason"]
    total = 0
    for g in groups:
        total += g.count
        lines.append(f"{g.count:>7} {g.jobs:>7}  {g.service:<10} {g.source_topic:<34} "
                     f"{iso(g.first_ms) or '-':<24} {iso(g.last_ms) or '-':<24} {g.reason}")
    lines.append(f"{total:>7} dead letter(s)")
    return "\n".join(lines)


def render_dead_letter(dead: DeadLetter, topics: Topics) -> str:
    """One record: coordinates, why and from where, its headers, and its value (decoded and
    masked when it decodes, else only its size and digest)."""
    head = [
        f"{dead.coordinates}  at {iso(dead.timestamp_ms)}",
        f"  reason:  {dead.reason}",
        f"  service: {dead.service}   "
        f"source: {dead.source_coordinates or dead.source_topic(topics)}",
        f"  key:     {dead.key.decode('utf-8', 'replace') if dead.key is not None else None}",
    ]
    for name, value in sorted(dead.headers.items()):
        head.append(f"  header {name} = {value.decode('utf-8', 'replace')[:200]}")
    if dead.record is not None:
        body = json.dumps(masked(dead.record), indent=2, sort_keys=True, default=str,
                          ensure_ascii=False)
        head.append(f"  value ({dead.record_name}):")
        head.extend(f"    {line}" for line in body.splitlines())
    elif dead.value is not None:
        head.append(f"  value: undecodable ({dead.decode_error}); {digest(dead.value)}")
    else:
        head.append("  value: none")
    return "\n".join(head)
