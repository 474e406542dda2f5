"""The sender's repeat window (services/sender/offsets.py): the jobs a SIGKILL would repeat are
those answered and not yet covered by an acknowledged commit, and they are counted exactly, so
the loop can bound them by construction. Pure: no broker."""

from __future__ import annotations

import random

from services.sender.commit_marks import decode_marks, decode_since
from services.sender.offsets import OffsetTracker


def test_answered_jobs_stay_unsettled_until_a_commit_covering_them_is_acknowledged() -> None:
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    entries = [part.track(o) for o in range(10)]
    assert tracker.unsettled == 0  # consumed, not sent: a crash repeats no push
    for e in entries[:6]:
        e.add_pending()  # answered by APNs, outcome produced
    assert tracker.unsettled == 6
    for e in entries[:4]:
        e.acked()
    [commit] = tracker.commits()
    assert commit.offset == 4
    assert tracker.unsettled == 6  # the commit is sent, not acknowledged
    tracker.settle()
    assert tracker.unsettled == 2  # 4 and 5: answered, their records not yet acknowledged
    entries[5].acked()  # done past the prefix: covered by the metadata of the next commit
    [commit] = tracker.commits()
    assert (commit.offset, decode_marks(4, commit.metadata)) == (4, {5})
    tracker.settle()
    assert tracker.unsettled == 1


def test_a_failed_commit_settles_nothing_and_the_next_one_does() -> None:
    tracker = OffsetTracker()
    a, b = tracker.partition("t", 0), tracker.partition("t", 1)
    for part in (a, b):
        for o in range(3):
            part.track(o).finish()
    assert tracker.unsettled == 6
    assert len(tracker.commits()) == 2
    tracker.settle(failed=[("t", 1)])
    assert tracker.unsettled == 3  # partition 1's commit failed
    tracker.recommit("t", 1)
    assert [c.partition for c in tracker.commits()] == [1]
    tracker.settle()
    assert tracker.unsettled == 0


def test_commits_are_answered_in_order_and_each_answer_settles_its_own() -> None:
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    entries = [part.track(o) for o in range(4)]
    entries[0].finish()
    tracker.commits()  # covers 1
    entries[1].finish()
    entries[2].finish()
    tracker.commits()  # covers 3, sent before the first was answered
    tracker.settle()
    assert tracker.unsettled == 2
    tracker.settle()
    assert tracker.unsettled == 0
    tracker.settle()  # an answer with nothing sent: nothing to do
    assert tracker.unsettled == 0


def test_a_revoked_partition_leaves_the_count_and_late_answers_do_not_come_back() -> None:
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    entries = [part.track(o) for o in range(5)]
    for e in entries[:3]:
        e.add_pending()
    tracker.revoke("t", 0)
    assert tracker.unsettled == 0
    entries[3].add_pending()
    entries[0].acked()
    assert tracker.unsettled == 0


def test_marks_that_do_not_fit_leave_their_jobs_unsettled() -> None:
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    rng = random.Random(3)
    entries = [part.track(o) for o in range(120_000)]
    done = 0
    for e in entries[1:]:
        if rng.random() < 0.5:  # incompressible: the metadata cannot hold them all
            e.finish()
            done += 1
    [commit] = tracker.commits()
    tracker.settle()
    kept = len(decode_marks(commit.offset, commit.metadata))
    assert 0 < kept < done
    assert tracker.unsettled == done - kept  # exactly the ones a takeover would send again


def test_a_commit_dates_the_outcomes_it_does_not_cover_from_the_oldest_unacknowledged_job(
) -> None:
    """A successor reads the outcomes topic from the commit's `since_ms` (already_sent.py): it
    must be no later than any outcome produced for a job the commit does not cover."""
    tracker = OffsetTracker()
    part = tracker.partition("t", 0)
    entries = [part.track(o) for o in range(4)]
    tracker.turn(1_000)
    entries[0].add_pending()
    entries[0].acked()
    tracker.turn(2_000)
    entries[1].add_pending()  # produced at 2,000, not acknowledged yet
    tracker.turn(3_000)
    entries[2].add_pending()
    entries[2].acked()
    [commit] = tracker.commits()
    assert commit.offset == 1 and decode_since(commit.metadata) == 2_000
    entries[1].acked()
    tracker.turn(4_000)  # everything produced is acknowledged: 3 produces from now on
    [commit] = tracker.commits()
    assert commit.offset == 3 and decode_since(commit.metadata) == 4_000
