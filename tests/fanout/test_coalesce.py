"""The coalescing rule, without Kafka: which new job rides on which outstanding one."""

from __future__ import annotations

import pytest

from services.fanout.coalesce import Carrier, carrier, rides_on

NOW = 1_800_000_000_000
WINDOW = 300_000


def test_a_job_becomes_a_carrier_for_the_window() -> None:
    assert carrier("r1/E1", NOW, WINDOW) == {"job_id": "r1/E1", "expires_at": NOW + WINDOW}


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
    assert rides_on(carriers, "E1", job, lane, now) == expected
