"""What one (request, target) becomes: a PushJob with its key and lane, or a SKIPPED outcome (or
a DEAD_LETTERED one, when Kafka refused its request for good).

Pure functions over decoded records, so the rules are unit-tested without Kafka and the faust
agent only moves bytes. Ids and keys follow docs/CONTRACTS.md.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from services.common.catalogue import Topics
from services.fanout.registry import Record, SkipReason

LANES = {"USER": "PRIORITY", "ADMIN": "BULK"}


def registry_partition(enrollment_id: str, partitions: int) -> int:
    """The fan-out's own partition of an enrollment (registry table, updates and slices).

    Explicit and independent of any client's partitioner, so every producer of the internal
    topics (and the expansion of explicit targets) agrees on where an enrollment lives.
    """
    return zlib.crc32(enrollment_id.encode()) % partitions


def job_id(request_id: str, enrollment_id: str) -> str:
    return f"{request_id}/{enrollment_id}"


def job_key(topic: str, enrollment_id: str, shards: int) -> str:
    """The certificate topic, plus `#shard` when its policy splits it (CONTRACTS.md)."""
    if shards <= 1:
        return topic
    return f"{topic}#{zlib.crc32(enrollment_id.encode()) % shards}"


@dataclass(frozen=True, slots=True)
class Lane:
    """The lane of a request (from its initiator) and the jobs topic that lane uses."""

    name: str
    jobs_topic: str

    @classmethod
    def of(cls, request: dict[str, Any], topics: Topics) -> Lane:
        name = LANES[request["initiator"]]
        return cls(name, topics.jobs_priority if name == "PRIORITY" else topics.jobs_bulk)


def build_job(request: dict[str, Any], record: Record, lane: str, now_ms: int) -> dict[str, Any]:
    """A PushJob for a pushable `record` (see registry.skip_reason), with its current trifecta."""
    is_mdm = request["kind"] == "MDM"
    return {
        "job_id": job_id(request["request_id"], record["enrollment_id"]),
        "request_id": request["request_id"],
        "tenant": request["tenant"],
        "enrollment_id": record["enrollment_id"],
        "lane": lane,
        "kind": request["kind"],
        "topic": record["topic"],
        "token_hex": record["token_hex"],
        "push_magic": record["push_magic"] if is_mdm else None,
        "aps_payload": None if is_mdm else request["aps_payload"],
        "expiration": request["expiration"],
        "command_type": request["command_type"],
        "token_updated_at": record["token_updated_at"],
        "created_at": now_ms,
        "attempt": 0,
        "repush": 0,
        "last_error": None,
    }


def skipped_outcome(
    request: dict[str, Any],
    enrollment_id: str,
    record: Record | None,
    reason: SkipReason,
    lane: str,
    at: int,
    rides_on: str | None = None,
) -> dict[str, Any]:
    """The SKIPPED outcome of a target; the trifecta known (if any) is kept as evidence.

    Another tenant's record is never echoed back: its outcome looks like an unknown enrollment's.
    `rides_on`: the carrier job of a `coalesced` target (not terminal: the correlator closes it
    with the carrier's verdict); its `at` is coalesce.rider_at's.
    """
    reported = reason.reported
    evidence = record if reported is not SkipReason.UNKNOWN_ENROLLMENT else None
    return _outcome(request, enrollment_id, "SKIPPED", reported.value, lane, at, evidence,
                    rides_on)


def dead_lettered_outcome(
    request: dict[str, Any], enrollment_id: str, reason: str, lane: str, at: int
) -> dict[str, Any]:
    """The DEAD_LETTERED outcome of a target the fan-out could not expand because Kafka
    refused its request's records for good (the request is on the DLQ): its terminal state, so
    the target is accounted for. No trifecta: the rest of the slice was never looked up."""
    return _outcome(request, enrollment_id, "DEAD_LETTERED", reason, lane, at, None, None)


def _outcome(
    request: dict[str, Any], enrollment_id: str, state: str, reason: str, lane: str, at: int,
    evidence: Record | None, rides_on: str | None,
) -> dict[str, Any]:
    """A PushOutcome the fan-out writes itself: no push was made (attempt 0, no APNs answer)."""
    return {
        "job_id": job_id(request["request_id"], enrollment_id),
        "request_id": request["request_id"],
        "tenant": request["tenant"],
        "enrollment_id": enrollment_id,
        "state": state,
        "lane": lane,
        "attempt": 0,
        "repush": 0,
        "topic": evidence["topic"] if evidence else None,
        "token_hex": evidence["token_hex"] if evidence else None,
        "push_magic": evidence["push_magic"] if evidence else None,
        "token_updated_at": evidence["token_updated_at"] if evidence else None,
        "apns_id": None,
        "status": None,
        "reason": reason,
        "apns_timestamp": None,
        "latency_ms": None,
        "at": at,
        "rides_on": rides_on,
    }
