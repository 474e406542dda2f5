"""Per-device coalescing: one outstanding push per enrollment; bulk requests ride on it.

APNs keeps one notification per device, and an MDM push only says "check in": a second push to
a device that has not yet answered the first brings nothing, and under a throttle it delays every
other device. So the fan-out remembers, per enrollment, the *carrier*: the last job it created
(priority or bulk) and when that job stops being outstanding (`expires_at` = creation + window,
the window defaulting to the correlator's deadline). The carrier is forgotten when the
enrollment's next check-in is seen (the device answered) or when the window has passed.

A bulk target whose enrollment has a carrier gets no job: its outcome is SKIPPED `coalesced`
with `rides_on` = the carrier's job id, and the correlator closes it with the carrier's verdict
(docs/coalescing.md). A priority target is never coalesced (a user waits for it): it always gets
a job, which becomes the new carrier.

Pure: the carriers live in a mutable mapping the caller persists (app.py keeps them in a faust
table partitioned like the registry, so a carrier is set and cleared where its enrollment lives).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict


class Carrier(TypedDict):
    """The outstanding push of one enrollment."""

    job_id: str
    created_at: int
    expires_at: int


def rides_on(
    carriers: Mapping[str, Carrier], enrollment_id: str, job_id: str, lane: str, now_ms: int
) -> Carrier | None:
    """The carrier a new job `job_id` for `enrollment_id` would ride on, or None when the job
    must be produced.

    A job is its own carrier when a slice is expanded again after a crash: it is produced again
    (the sender and correlator recognise repeated job ids), never coalesced onto itself.
    """
    if lane != "BULK":
        return None
    carrier = carriers.get(enrollment_id)
    if carrier is None or carrier["expires_at"] <= now_ms or carrier["job_id"] == job_id:
        return None
    return carrier


def carrier(job_id: str, now_ms: int, window_ms: int) -> Carrier:
    """The carrier a job created at `now_ms` becomes."""
    return {"job_id": job_id, "created_at": now_ms, "expires_at": now_ms + window_ms}


def rider_at(carried_by: Carrier, requested_at: int, now_ms: int) -> int:
    """The `at` of a coalesced outcome: from when a device contact answers the rider.

    The correlator closes a rider whose carrier it has already judged by "a contact after the
    rider's `at`" (contract C1). The fan-out learns of check-ins later than the correlator, so it
    may coalesce onto a carrier the device has just answered; that contact fetched the rider's
    command if it came after the command was queued (`requested_at`) and after the carrier was
    pushed. So `at` is the later of the two, never later than now (and `now` when the request's
    clock is not comparable: a requested_at in the future or unset).
    """
    return min(now_ms, max(requested_at, carried_by["created_at"]))
