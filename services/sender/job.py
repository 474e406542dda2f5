"""What travels through the sender's hot path: the decoded job, its outcome, and its lane.

The job stays the dict the Avro decoder returns, typed as a TypedDict: a typed view at no cost
per record (a dataclass would be built and taken apart again for every retry copy and outcome,
tens of thousands of times per second).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypedDict


class Lane(StrEnum):
    """The sender's buffer lanes, in service order.

    PRIORITY and BULK are the job's own lane (the PushJob schema's `Lane`); RETRY is a bulk job
    read back from a retry tier. Due retries come before fresh bulk jobs: they are older, and
    their tier delay is already the wait they were promised. RETRY uses the bulk bucket and the
    bulk connection, and its outcomes say BULK. The APNs pool's connection lanes are the job
    lanes, PRIORITY and BULK (apns/pool.py)."""

    PRIORITY = "PRIORITY"
    RETRY = "RETRY"
    BULK = "BULK"

    @property
    def job_lane(self) -> Lane:
        """The lane of the job's own record: its bucket, its connection, its outcome's `lane`."""
        return Lane.BULK if self is Lane.RETRY else self


#: Service order: priority first, then due retries, then fresh bulk jobs.
LANES = (Lane.PRIORITY, Lane.RETRY, Lane.BULK)


class PushJob(TypedDict):
    """A `PushJob` record (schemas/PushJob.avsc) as decoded: epoch ms as ints."""

    job_id: str
    request_id: str
    tenant: str
    enrollment_id: str
    lane: str
    kind: str
    topic: str
    token_hex: str
    push_magic: str | None
    aps_payload: str | None
    expiration: int | None
    command_type: str
    token_updated_at: int | None
    created_at: int
    attempt: int
    repush: int
    last_error: str | None


class PushOutcome(TypedDict):
    """A `PushOutcome` record (schemas/PushOutcome.avsc) as the sender writes it."""

    job_id: str
    request_id: str
    tenant: str
    enrollment_id: str
    state: str
    lane: str | None
    attempt: int
    repush: int
    topic: str | None
    token_hex: str | None
    push_magic: str | None
    token_updated_at: int | None
    apns_id: str | None
    status: int | None
    reason: str | None
    apns_timestamp: int | None
    latency_ms: float | None
    at: int
