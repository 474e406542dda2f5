"""When a retry record is due: its `mdmpush.not_before`, held at most its tier's delay."""

from __future__ import annotations

from services.common.catalogue import Topics
from services.common.kafka.memory import MemoryRecord
from services.sender.scheduler import NOT_BEFORE_HEADER, RetryScheduler

TIER = "p.mdm.push.retry.200ms.v1"
SOURCE = (TIER, 0)
YEAR_3000_MS = 32_503_680_000_000


def record(offset: int, not_before: int) -> MemoryRecord:
    return MemoryRecord(TIER, 0, offset, b"k", b"v",
                        [(NOT_BEFORE_HEADER, str(not_before).encode())])


def test_a_due_record_goes_and_a_later_one_waits_for_its_header() -> None:
    scheduler = RetryScheduler(Topics("p."), (200, 500))
    assert scheduler.wait_until(SOURCE, 5, record(5, 900), now_ms=1_000) is None
    assert scheduler.wait_until(SOURCE, 5, record(5, 1_150), now_ms=1_000) == 1_150


def test_a_far_future_header_holds_its_partition_one_tier_delay_only() -> None:
    scheduler = RetryScheduler(Topics("p."), (200, 500))
    head = record(7, YEAR_3000_MS)
    due = scheduler.wait_until(SOURCE, 7, head, now_ms=1_000)
    assert due == 1_200
    scheduler.hold(SOURCE, due, 7)
    assert scheduler.due(1_199) == []
    assert scheduler.due(1_200) == [SOURCE]
    # Read again after its hold ran out: due, although its header still says the year 3000.
    assert scheduler.wait_until(SOURCE, 7, head, now_ms=1_201) is None
    # Only that head: the next far-future record waits its own delay.
    assert scheduler.wait_until(SOURCE, 8, record(8, YEAR_3000_MS), now_ms=1_201) == 1_401


def test_a_released_mark_is_for_the_same_head_only() -> None:
    scheduler = RetryScheduler(Topics("p."), (200, 500))
    scheduler.hold(SOURCE, 1_200, 7)
    assert scheduler.due(1_200) == [SOURCE]
    # Another record comes first (the head was taken by a rebalance in between): checked as usual.
    assert scheduler.wait_until(SOURCE, 9, record(9, 5_000), now_ms=1_300) == 1_500
    scheduler.hold(SOURCE, 1_200, 7)
    scheduler.drop(SOURCE)
    assert scheduler.due(10_000) == []
