"""The jobs outstanding on the sender's partitions, from librdkafka's statistics (backlog.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from services.sender.backlog import Backlog


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
