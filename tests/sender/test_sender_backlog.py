"""The jobs outstanding on the sender's partitions, from librdkafka's statistics, and the pushes
of the recent past (backlog.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from services.sender.backlog import Backlog, RecentPushes


def stats(partitions: Mapping[str, Mapping[str, object]]) -> str:
    return json.dumps({"topics": {"jobs": {"partitions": partitions}}})


def test_outstanding_is_the_end_minus_the_committed_offset_of_assigned_partitions() -> None:
    backlog = Backlog()
    assert backlog() is None  # no statistics yet
    backlog.update(stats(
        {"0": {"desired": True, "hi_offset": 900, "committed_offset": 300, "lo_offset": 0},
         "1": {"desired": True, "hi_offset": 50, "committed_offset": -1001, "lo_offset": 10},
         "2": {"desired": False, "hi_offset": 5000, "committed_offset": 0},
         "-1": {"desired": False, "hi_offset": -1001}}))
    assert backlog() == 600 + 40  # partition 1: nothing committed, from its first record


def test_unreadable_statistics_keep_the_last_count() -> None:
    backlog = Backlog()
    backlog.update(stats({"0": {"desired": True, "hi_offset": 10, "committed_offset": 0}}))
    backlog.update("not json")
    backlog.update(json.dumps({"topics": {"jobs": {"partitions": []}}}))
    assert backlog() == 10


def test_recent_pushes_count_from_the_oldest_sample_within_the_span() -> None:
    recent = RecentPushes(span_s=60.0)
    assert recent.count(500) == 0  # no sample yet
    recent.mark(0.0, 100)
    recent.mark(30.0, 400)
    assert recent.count(700) == 600
    recent.mark(60.0, 700)
    assert recent.count(700) == 600  # the sample at 0 s is still within 60 s
    recent.mark(60.1, 710)
    assert recent.count(710) == 310  # from the 30 s sample
    recent.mark(200.0, 710)
    assert recent.count(750) == 40  # only the newest sample is left
