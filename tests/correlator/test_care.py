"""Silent-device care, coalesced riders and the bound on enrollment rows, as tables against the
pure core on a simulated clock (the rows' format: tests/correlator/test_core.py)."""

from __future__ import annotations

from typing import Any

from services.common.accounting import Accounting, is_terminal
from services.correlator.care import stable_hash
from services.correlator.effects import ActivityWrite, RepushJob, Verdict
from services.correlator.pending import LANE_BULK, RIDER, Entry
from tests.correlator.test_core import (
    ENROLLED,
    HOUR,
    TOKEN_A,
    TOPIC,
    Row,
    Run,
    Step,
    T,
    assign,
    checkin,
    outcome,
    play,
    restore,
    table,
    tick,
    token_update,
)

MINUTE = 60_000
#: Compressed care: re-arm after 1 h of silence, inactive after 20 h, no spread, no rate cap.
CARE = dict(rearm_after_ms=HOUR, inactive_after_ms=20 * HOUR, rearm_spread_ms=0,
            rearm_per_minute=1e9, care_scan_rows=1000)
SILENT_SINCE = T - 10 * HOUR  # ENROLLED's TokenUpdate: the last contact in most rows


def activity(e: str, state: str, at: int, last_contact: int | None = None,
             rearmed_at: int | None = None) -> Step:
    record = {"tenant": "acme", "enrollment_id": e, "state": state,
              "last_contact_at": last_contact, "at": at, "rearmed_at": rearmed_at}

    def step(r: Run) -> list[Any]:
        r.core.activity(record)
        return []
    return step


def rider(e: str, at: int, request: str = "req-2", carrier: str = "req-1", p: int = 0) -> Step:
    return outcome(e, at, state="SKIPPED", request=request, reason="coalesced",
                   rides_on=f"{carrier}/{e}", lane="BULK", p=p)


REARM = f"rearm-{SILENT_SINCE}/E1#r1"


@table(
    Row("silent past rearm_after: one re-arm push on the bulk lane, recorded as ACTIVE",
        [assign(), ENROLLED, tick(T), tick(T + 1_000), tick(T + HOUR)],
        [f"job {REARM} rearm aaaa bulk", "activity E1 ACTIVE"], CARE),
    Row("not yet due: nothing",
        [assign(), token_update("E1", T), tick(T + HOUR - 1)],
        [], CARE),
    Row("silent past inactive_after: INACTIVE once; the next contact makes it ACTIVE",
        [assign(), token_update("E1", T), tick(T + HOUR), tick(T + 20 * HOUR),
         tick(T + 21 * HOUR), checkin("E1", T + 22 * HOUR), tick(T + 22 * HOUR)],
        [f"job rearm-{T}/E1#r1 rearm aaaa bulk", "activity E1 ACTIVE", "activity E1 INACTIVE",
         "activity E1 ACTIVE"], CARE),
    Row("a contact after the re-arm starts a new silence: re-armed again only after it",
        [assign(), token_update("E1", T), tick(T + HOUR), checkin("E1", T + 2 * HOUR),
         tick(T + 2 * HOUR + 10), tick(T + 3 * HOUR)],
        [f"job rearm-{T}/E1#r1 rearm aaaa bulk", "activity E1 ACTIVE",
         f"job rearm-{T + 2 * HOUR}/E1#r1 rearm aaaa bulk", "activity E1 ACTIVE"], CARE),
    Row("no trifecta known (no TokenUpdate, no push): no re-arm, still marked INACTIVE",
        [assign(), checkin("E1", T), tick(T + 2 * HOUR), tick(T + 20 * HOUR)],
        ["activity E1 INACTIVE"], CARE),
    Row("the trifecta of a push it was sent is enough to re-arm",
        [assign(), checkin("E1", T - HOUR), outcome("E1", at=T - HOUR), tick(T + HOUR)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -",
         f"job rearm-{T - HOUR}/E1#r1 rearm aaaa bulk", "activity E1 ACTIVE"], CARE),
    Row("a checked-out enrollment is left alone",
        [assign(), ENROLLED, checkin("E1", T - 9 * HOUR, "CHECK_OUT"), tick(T)],
        [], CARE),
    Row("a partition this instance does not judge (gated) is left alone until it opens",
        [assign(gate=1), ENROLLED, tick(T), outcome("E9", state="FAILED", reason="x"), tick(T)],
        [f"job {REARM} rearm aaaa bulk", "activity E1 ACTIVE"], CARE),
    Row("re-armed before a restart (activity topic): not again for the same silence",
        [ENROLLED, activity("E1", "ACTIVE", T - 8 * HOUR, SILENT_SINCE, T - 8 * HOUR),
         assign(), tick(T)],
        [], CARE),
    Row("INACTIVE in the topic but contacted since (e.g. while another instance owned it)",
        [activity("E1", "INACTIVE", T - HOUR, SILENT_SINCE), assign(), token_update("E1", T),
         tick(T + 10)],
        ["activity E1 ACTIVE"], CARE),
    Row("an enrollment known only from the topic (check-ins past retention) stays INACTIVE",
        [activity("E1", "INACTIVE", T - HOUR, T - 30 * HOUR), assign(), tick(T)],
        [], CARE),
    Row("care off (both 0): nothing",
        [assign(), ENROLLED, tick(T + 100 * HOUR)],
        [], {**CARE, "rearm_after_ms": 0, "inactive_after_ms": 0}),
)
def test_care(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


def fleet(run: Run, count: int, at: int) -> list[str]:
    ids = [f"D{i:04d}" for i in range(count)]
    for e in ids:
        token_update(e, at)(run)
    return ids


def test_a_fleet_silent_at_once_is_re_armed_over_the_spread_window_never_early() -> None:
    settings = {**CARE, "rearm_spread_ms": 30 * MINUTE, "inactive_after_ms": 10 * HOUR}
    run = Run(**settings)
    ids = fleet(run, 300, T)
    assign()(run)
    sent: dict[str, int] = {}
    per_tick = []
    for now in range(T, T + HOUR + 31 * MINUTE, MINUTE):
        jobs = [e for e in run.core.tick(now) if isinstance(e, RepushJob)]
        per_tick.append(len(jobs))
        sent.update({j.record["enrollment_id"]: now for j in jobs})
    assert sorted(sent) == ids  # every one, once
    for e, at in sent.items():
        due = T + HOUR + stable_hash(e) % (30 * MINUTE)
        assert due <= at < due + MINUTE
    # 300 over 30 one-minute ticks: no tick carries more than a small share.
    assert max(per_tick) <= 30 and sum(1 for n in per_tick if n) >= 25


def test_the_rate_cap_holds_re_arms_back_and_none_is_lost() -> None:
    run = Run(**{**CARE, "rearm_per_minute": 60.0, "inactive_after_ms": 10 * HOUR})
    fleet(run, 100, T)
    assign()(run)
    counts = []
    for second in range(0, 200):
        effects = run.core.tick(T + HOUR + second * 1_000)
        counts.append(sum(isinstance(e, RepushJob) for e in effects))
    assert max(counts) <= 60  # the first turn may spend a minute's budget, never more
    assert sum(counts[:40]) <= 60 + 40  # then 1 per (simulated) second
    assert sum(counts) == 100 and run.core.care.rearms == 100


def test_answered_after_re_arm_and_inactive_are_counted() -> None:
    run = Run(**CARE)
    for e in ("A", "B", "C"):
        token_update(e, T)(run)
    assign()(run)
    run.core.tick(T + HOUR)
    assert run.core.care.rearms == 3
    checkin("A", T + 2 * HOUR)(run)  # answers after its re-arm
    checkin("A", T + 2 * HOUR + 5)(run)  # a second contact is not a second answer
    effects = run.core.tick(T + 20 * HOUR)
    assert run.core.care.answered_after_rearm == 1
    assert sorted(e.record["enrollment_id"] for e in effects
                  if isinstance(e, ActivityWrite) and e.record["state"] == "INACTIVE") == \
        ["B", "C"]
    assert run.core.care.inactive == 2
    checkin("B", T + 21 * HOUR)(run)
    assert run.core.care.inactive == 1


def test_only_the_owner_of_an_enrollments_partition_cares_for_it() -> None:
    run = Run(**CARE)
    run.core.partition_count = 2
    ids = fleet(run, 40, T)
    assign(0)(run)
    armed = {e.record["enrollment_id"] for e in run.core.tick(T + HOUR)
             if isinstance(e, RepushJob)}
    assert armed == {e for e in ids if stable_hash(e) % 2 == 0} and 0 < len(armed) < 40


# -- riders (coalesced requests) ------------------------------------------------------------
RIDER_E1 = Entry(RIDER, "E1", "req-2", "acme", TOPIC, TOKEN_A, "m-E1", None, T + 10, T - HOUR,
                 LANE_BULK, 0, rides_on="req-1")


@table(
    Row("a rider gets its carrier's ANSWERED",
        [assign(), ENROLLED, outcome("E1"), rider("E1", T + 10), checkin("E1", T + 100)],
        ["state req-1/E1", "state req-2/E1", "verdict req-2/E1 ANSWERED coalesced onto req-1/E1",
         "verdict req-1/E1 ANSWERED -"]),
    Row("a rider gets its carrier's UNANSWERED (and no alert of its own)",
        [assign(), ENROLLED, outcome("E1"), rider("E1", T + 10), tick(T + 5_000)],
        ["state req-1/E1", "state req-2/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable",
         "verdict req-2/E1 UNANSWERED coalesced onto req-1/E1"]),
    Row("a carrier that FAILED before the rider was seen passes FAILED on",
        [assign(), ENROLLED, outcome("E1", state="FAILED", reason="BadDeviceToken"),
         rider("E1", T + 10)],
        ["state req-2/E1", "verdict req-2/E1 FAILED carrier req-1/E1 FAILED"]),
    Row("an unknown carrier that is dead-lettered later passes that on",
        [assign(), ENROLLED, rider("E1", T + 10), outcome("E1", state="DEAD_LETTERED")],
        ["state req-2/E1", "verdict req-2/E1 DEAD_LETTERED carrier req-1/E1 DEAD_LETTERED"]),
    Row("carrier unknown: a contact after the rider's time answers it",
        [assign(), ENROLLED, rider("E1", T + 10), checkin("E1", T + 50)],
        ["state req-2/E1", "verdict req-2/E1 ANSWERED coalesced onto req-1/E1"]),
    Row("carrier unknown: a contact before the rider's time does not",
        [assign(), ENROLLED, checkin("E1", T), rider("E1", T + 10), tick(T + 5_020)],
        ["state req-2/E1", "verdict req-2/E1 UNANSWERED coalesced onto req-1/E1"]),
    Row("carrier answered before the rider was seen: the rider judges itself",
        [assign(), ENROLLED, outcome("E1"), checkin("E1", T + 5), rider("E1", T + 10),
         checkin("E1", T + 20)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -", "state req-2/E1",
         "verdict req-2/E1 ANSWERED coalesced onto req-1/E1"]),
    Row("the echo of a rider's verdict tombstones it; a re-read rider is ignored",
        [assign(), ENROLLED, rider("E1", T + 10), checkin("E1", T + 50),
         outcome("E1", state="ANSWERED", request="req-2"), rider("E1", T + 10)],
        ["state req-2/E1", "verdict req-2/E1 ANSWERED coalesced onto req-1/E1",
         "tombstone req-2/E1"]),
    Row("the echo of a rider's FAILED verdict is an echo, not a carrier failure",
        [assign(), ENROLLED, outcome("E1", state="FAILED", reason="BadDeviceToken"),
         rider("E1", T + 10),
         outcome("E1", state="FAILED", request="req-2", reason="carrier req-1/E1 FAILED")],
        ["state req-2/E1", "verdict req-2/E1 FAILED carrier req-1/E1 FAILED",
         "tombstone req-2/E1"]),
    Row("a restored rider whose verdict's echo follows is not judged twice",
        [restore(RIDER_E1), ENROLLED, checkin("E1", T + 100), assign(gate=1),
         outcome("E1", state="ANSWERED", request="req-2")],
        ["tombstone req-2/E1"]),
    Row("carrier and rider due in the same tick: the rider is closed once, by the carrier",
        [assign(), ENROLLED, outcome("E1"), rider("E1", T + 1), tick(T + 5_020)],
        ["state req-1/E1", "state req-2/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable",
         "verdict req-2/E1 UNANSWERED coalesced onto req-1/E1"]),
    Row("a dead letter replayed and SENT again is judged like any push",
        [assign(), ENROLLED, outcome("E1", state="DEAD_LETTERED"), outcome("E1"),
         checkin("E1", T + 100)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
    Row("carrier unknown: an answer stamped in time but read within the grace answers it",
        [assign(), ENROLLED, rider("E1", T + 10), tick(T + 5_020),
         checkin("E1", T + 5_000, now=T + 6_000)],
        ["state req-2/E1", "verdict req-2/E1 ANSWERED coalesced onto req-1/E1"],
        {"checkin_grace_ms": 2_000}),
    Row("carrier unknown: an answer stamped after the rider's deadline does not",
        [assign(), ENROLLED, rider("E1", T + 10), checkin("E1", T + 5_100, now=T + 5_200),
         tick(T + 7_020)],
        ["state req-2/E1", "verdict req-2/E1 UNANSWERED coalesced onto req-1/E1"],
        {"checkin_grace_ms": 2_000}),
    Row("a restored rider is judged when its partition's gate opens",
        [restore(RIDER_E1), ENROLLED, checkin("E1", T + 100), assign(gate=1),
         outcome("E5")],
        ["state req-1/E5", "verdict req-2/E1 ANSWERED coalesced onto req-1/E1"]),
)
def test_riders(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


def test_a_rider_and_its_carrier_each_end_exactly_once_in_the_accounting() -> None:
    run = Run()
    skipped = {"job_id": "req-2/E1", "request_id": "req-2", "enrollment_id": "E1",
               "state": "SKIPPED", "reason": "coalesced", "repush": 0}
    by_request = {"req-1": Accounting(), "req-2": Accounting()}
    by_request["req-2"].add(skipped)
    assert not is_terminal(skipped) and by_request["req-2"].missing(["E1"]) == ["E1"]
    for step in (assign(), ENROLLED, outcome("E1"), rider("E1", T + 10),
                 checkin("E1", T + 100), tick(T + 60_000)):
        for effect in step(run):
            if isinstance(effect, Verdict):
                by_request[effect.record["request_id"]].add(effect.record)
    for acc in by_request.values():
        assert acc.state_of("E1") == "ANSWERED" and acc.doubled() == {}


def test_a_verdict_written_twice_is_doubled() -> None:
    acc = Accounting()
    verdict = {"job_id": "req-1/E1", "request_id": "req-1", "enrollment_id": "E1",
               "state": "ANSWERED", "repush": 0}
    acc.add(dict(verdict))
    assert acc.doubled() == {}
    acc.add(dict(verdict))
    assert acc.doubled() == {"E1": ["ANSWERED", "ANSWERED"]}
    acc.add({**verdict, "job_id": "req-1/E1#r1", "repush": 1})  # a re-push's: evidence only
    assert acc.doubled() == {"E1": ["ANSWERED", "ANSWERED"]}


# -- the bound on enrollment rows -----------------------------------------------------------
def test_check_ins_of_new_enrollments_are_refused_past_max_enrollments() -> None:
    run = Run(max_enrollments=3)
    assign()(run)
    for i in range(10):
        checkin(f"FLOOD-{i}", T + i)(run)
    assert len(run.core.book.ids) == 3 and run.core.refused_enrollments == 7
    checkin("FLOOD-0", T + 100)(run)  # a known enrollment still counts
    assert run.core.book.last_contact(run.core.book.ids.get("FLOOD-0") or 0) == T + 100
    assert run.core.refused_enrollments == 7


def test_a_push_to_a_new_enrollment_is_still_tracked_past_the_bound() -> None:
    """Rows from pushes are bounded by the registry (the fan-out's limits), not by this cap:
    a push must never go unjudged because a flood filled the book."""
    assert play([assign(), checkin("X1", T), checkin("X2", T), outcome("E1"),
                 checkin("E1", T + 100)], max_enrollments=2) == \
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]
