"""What the correlator's core decides, as plain data: the records the runner must write.

The core never touches Kafka; it returns these, and the runner writes them in the order the
restart guarantees need (runner.py): every *prerequisite* (alert, re-push job, state entry or
tombstone, activity record, dead letter) is acknowledged before any verdict of the same batch
is written and before any input offset is stored; verdicts and the tombstones of sent
self-healing pushes come after.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.correlator.pending import Entry


class Source(StrEnum):
    """The inputs a poison record can come from (the `source` label of the DLQ metric)."""

    CHECKINS = "checkins"
    OUTCOMES = "outcomes"


class RepushCause(StrEnum):
    """Why a re-push job was produced (the `cause` label of the re-push metric)."""

    ENROLLMENT_RACE = "enrollment_race"
    SILENT = "silent"
    STALE_TOKEN = "stale_token"
    SELF_HEAL = "self_heal"
    REARM = "rearm"


@dataclass(frozen=True, slots=True)
class Verdict:
    """An ANSWERED/UNANSWERED PushOutcome, written into the partition of its SENT outcome."""

    partition: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Alert:
    """An UnansweredPush (key: the enrollment id). `at_deadline`: flagged by a push's deadline
    (its lateness is `flagged_at - deadline_at`), not by a FAILED outcome."""

    record: dict[str, Any]
    at_deadline: bool = False


@dataclass(frozen=True, slots=True)
class RepushJob:
    """A PushJob on the lane its record names (re-pushes: priority; re-arms: bulk), keyed by
    its push topic."""

    record: dict[str, Any]
    cause: RepushCause


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A state (changelog) entry of partition `partition`, or its tombstone (`entry` None).

    `after_job`: the tombstone of a self-healing push that was just sent; written only once the
    job is acknowledged, so a crash in between sends the push again rather than never.
    """

    partition: int
    job_id: str
    entry: Entry | None
    after_job: bool = False


@dataclass(frozen=True, slots=True)
class ActivityWrite:
    """An EnrollmentActivity record (key: the enrollment id) for the compacted activity topic."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The input record at (source, partition, offset) goes to the DLQ with `reason`."""

    source: Source
    partition: int
    offset: int
    reason: str


Effect = Verdict | Alert | RepushJob | StateWrite | ActivityWrite | DeadLetter


def is_prerequisite(effect: Effect) -> bool:
    """Must be acknowledged before the batch's verdicts are written and its offsets stored."""
    if isinstance(effect, Verdict):
        return False
    return not (isinstance(effect, StateWrite) and effect.after_job)
