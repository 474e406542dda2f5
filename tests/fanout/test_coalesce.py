"""The coalescing rule, without Kafka: which new job rides on which outstanding one."""

from __future__ import annotations

import pytest

from services.fanout.coalesce import Carrier, carrier, rider_at, rides_on

NOW = 1_800_000_000_000
WINDOW = 300_000


def test_a_job_becomes_a_carrier_for_the_window() -> None:
    assert carrier("r1/E1", NOW, WINDOW) == {"job_id": "r1/E1", "created_at": NOW,
                                             "expires_at": NOW + WINDOW}


@pytest.mark.parametrize(
    ("carriers", "job", "lane", "now", "expected"),
    [
        ({}, "r2/E1", "BULK", NOW, None),  # nothing outstanding: push
        ({"E1": carrier("r1/E1", NOW, WINDOW)}, "r2/E1", "BULK", NOW + 1, "r1/E1"),
        ({"E1": carrier("r1/E1", NOW, WINDOW)}, "r2/E1", "PRIORITY", NOW + 1, None),
        ({"E1": carrier("r1/E1", NOW, WINDOW)}, "r2/E1", "BULK", NOW + WINDOW, None),  # expired
        ({"E1": carrier("r1/E1", NOW, WINDOW)}, "r1/E1", "BULK", NOW + 1, None),  # itself again
        ({"E2": carrier("r1/E2", NOW, WINDOW)}, "r2/E1", "BULK", NOW + 1, None),  # another device
    ],
)
def test_rides_on(carriers: dict[str, Carrier], job: str, lane: str, now: int,
                  expected: str | None) -> None:
    found = rides_on(carriers, "E1", job, lane, now)
    assert (found["job_id"] if found is not None else None) == expected


@pytest.mark.parametrize(
    ("requested_at", "now", "expected"),
    [
        (NOW + 50, NOW + 100, NOW + 50),  # queued after the carrier was pushed
        (NOW - 50, NOW + 100, NOW),  # queued before: a contact must follow the carrier's push
        (0, NOW + 100, NOW),  # unset
        (NOW + 500, NOW + 100, NOW + 100),  # a request clock ahead of ours: never later than now
    ],
)
def test_a_rider_is_answered_by_a_contact_after_its_command_and_its_carrier(
        requested_at: int, now: int, expected: int) -> None:
    assert rider_at(carrier("r1/E1", NOW, WINDOW), requested_at, now) == expected
