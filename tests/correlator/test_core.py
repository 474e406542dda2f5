"""The correlator's rules as tables, against the pure core (no broker, no clock, no process).

Each row is a scenario: inputs in the order the runner would feed them (partition assignment
and restore, check-ins, outcomes with their offsets, clock ticks) and every effect the core
returns, summarised one line each: `state <job>` / `tombstone <job>` (`+after-job`: written
after the re-push job), `job <job> <cause> <token prefix>`, `alert <job> <DIAGNOSIS>`,
`verdict <job> <STATE> <reason>`, `dlq <source> <partition>@<offset>`, `activity <enrollment>
<STATE>` (a re-arm job on the bulk lane ends in ` bulk`).
"""

from __future__ import annotations

import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.correlator.core import CorrelatorCore
from services.correlator.effects import (
    ActivityWrite,
    Alert,
    DeadLetter,
    Effect,
    RepushJob,
    StateWrite,
    Verdict,
    is_prerequisite,
)
from services.correlator.pending import LANE_PRIORITY, PENDING, SCHEDULED, WINDOW_DONE, Entry
from services.correlator.settings import CorrelatorSettings

T = 1_795_000_000_000
HOUR = 3_600_000
TOPIC = "com.apple.mgmt.External.aaaaaaaa-0000-4000-8000-000000000001"
TOKEN_A, TOKEN_B, TOKEN_C = "aa" * 32, "bb" * 32, "cc" * 32
#: No check-in grace unless a row sets one: the verdict is given at the deadline tick.
RULES = dict(race_window_ms=1_000, race_enrollment_ms=3_000, deadline_ms=5_000,
             self_heal_delay_ms=90_000, timer_tick_ms=10, repush_silent=False,
             checkin_grace_ms=0)


class Run:
    """Feeds one scenario to a core, numbering outcome offsets per partition."""

    def __init__(self, **settings: Any) -> None:
        self.core = CorrelatorCore(CorrelatorSettings(**{**RULES, **settings}))
        self.core.take([0])  # as the runner does first when it is assigned a partition
        self.next_offset: dict[int, int] = defaultdict(int)
        self.effects: list[Effect] = []

    def offset(self, p: int) -> int:
        o = self.next_offset[p]
        self.next_offset[p] += 1
        return o


Step = Callable[[Run], list[Effect]]


def assign(p: int = 0, gate: int | None = None) -> Step:
    return lambda r: r.core.assign(p, gate)


def revoke(p: int = 0) -> Step:
    def step(r: Run) -> list[Effect]:
        r.core.revoke([p])
        return []
    return step


def restore(entry: Entry | None, p: int = 0, job: str = "req-1/E1") -> Step:
    def step(r: Run) -> list[Effect]:
        r.core.restore(p, entry.job_id if entry else job, entry)
        return []
    return step


def checkin(e: str, at: int, kind: str = "COMMAND_REPORT", now: int | None = None,
            **fields: Any) -> Step:
    event = {"event_id": uuid.uuid4().hex, "enrollment_id": e, "tenant": "acme",
             "message_type": kind, "udid": e, "topic": None, "token_hex": None,
             "push_magic": None, "occurred_at": at}
    event.update(fields)
    return lambda r: r.core.checkin(event, now=at if now is None else now)


def token_update(e: str, at: int, token: str = TOKEN_A, magic: str | None = None,
                 udid: str | None = None) -> Step:
    return checkin(e, at, "TOKEN_UPDATE", topic=TOPIC, token_hex=token,
                   push_magic=magic or f"m-{e}", udid=udid or e)


def outcome(e: str, at: int = T, state: str = "SENT", p: int = 0, request: str = "req-1",
            now: int | None = None, **fields: Any) -> Step:
    rec = {"job_id": f"{request}/{e}", "request_id": request, "tenant": "acme",
           "enrollment_id": e, "state": state, "lane": "PRIORITY", "repush": 0,
           "topic": TOPIC, "token_hex": TOKEN_A, "push_magic": f"m-{e}",
           "token_updated_at": T - HOUR, "apns_id": str(uuid.uuid4()), "reason": None, "at": at}
    rec.update(fields)
    return lambda r: r.core.outcome(rec, p, r.offset(p), now=at if now is None else now)


def poison_outcome(p: int = 0) -> Step:
    return lambda r: r.core.poison_outcome(p, r.offset(p), "not avro")


def poison_checkin(p: int, offset: int) -> Step:
    return lambda r: r.core.poison_checkin(p, offset, "not avro")


def dead_lettered(offsets: dict[int, int]) -> Step:
    def step(r: Run) -> list[Effect]:
        r.core.mark_dead_lettered(offsets)
        return []
    return step


def tick(now: int) -> Step:
    return lambda r: r.core.tick(now)


def summary(effect: Effect) -> str:
    match effect:
        case Verdict(record=rec):
            return f"verdict {rec['job_id']} {rec['state']} {rec['reason'] or '-'}"
        case Alert(record=rec):
            return f"alert {rec['job_id']} {rec['diagnosis']}"
        case RepushJob(record=rec, cause=cause):
            lane = " bulk" if rec["lane"] == "BULK" else ""
            return f"job {rec['job_id']} {cause.value} {rec['token_hex'][:4]}{lane}"
        case ActivityWrite(record=rec):
            return f"activity {rec['enrollment_id']} {rec['state']}"
        case StateWrite(job_id=job, entry=entry, after_job=after):
            return f"{'state' if entry else 'tombstone'} {job}" + (" +after-job" if after else "")
        case DeadLetter(source=source, partition=p, offset=offset):
            return f"dlq {source.value} {p}@{offset}"
    raise AssertionError(effect)


def play(steps: Sequence[Step], **settings: Any) -> list[str]:
    run = Run(**settings)
    for step in steps:
        run.effects.extend(step(run))
    return [summary(e) for e in run.effects]


@dataclass(frozen=True)
class Row:
    id: str
    steps: list[Step]
    expected: list[str]
    settings: dict[str, Any] = field(default_factory=dict)


def table(*rows: Row) -> Any:
    return pytest.mark.parametrize("row", rows, ids=[r.id for r in rows])


ENROLLED = token_update("E1", T - 10 * HOUR)  # long before the push: no enrollment race
PENDING_E1 = Entry(PENDING, "E1", "req-1", "acme", TOPIC, TOKEN_A, "m-E1", None, T, T - HOUR,
                   LANE_PRIORITY, 0)


@table(
    Row("a contact while gated is answered once the partition is read to its end",
        [assign(gate=2), ENROLLED, outcome("E1"), checkin("E1", T + 100), outcome("E2")],
        ["state req-1/E1", "state req-1/E2", "verdict req-1/E1 ANSWERED -"]),
    Row("timers wait while gated, fire once the gate opens",
        [assign(gate=2), ENROLLED, outcome("E1"), tick(T + 10_000),
         outcome("E9", state="FAILED", reason="BadDeviceToken"), tick(T + 10_020)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("a poison outcome at the gate's end still opens it",
        [assign(gate=2), ENROLLED, outcome("E1"), checkin("E1", T + 100), poison_outcome()],
        ["state req-1/E1", "dlq outcomes 0@1", "verdict req-1/E1 ANSWERED -"]),
    Row("a caught-up partition judges a push already answered at once",
        [assign(), ENROLLED, checkin("E1", T + 50), outcome("E1")],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
    Row("a revoked partition's pushes are forgotten: no verdict, no timer",
        [assign(), ENROLLED, outcome("E1"), revoke(), checkin("E1", T + 100), tick(T + 10_000)],
        ["state req-1/E1"]),
    Row("a restored push answered while the instance was down is answered at the gate",
        [restore(PENDING_E1), ENROLLED, checkin("E1", T + 100), assign(gate=1),
         outcome("E2")],
        ["state req-1/E2", "verdict req-1/E1 ANSWERED -"]),
)
def test_gate(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


@table(
    Row("the echo of a restored push's verdict drops it before the gate opens: no second one",
        [restore(PENDING_E1), ENROLLED, checkin("E1", T + 100), assign(gate=1),
         outcome("E1", state="ANSWERED")],
        ["tombstone req-1/E1"]),
    Row("a SENT re-read after its verdict's echo is ignored",
        [assign(), ENROLLED, outcome("E1"), checkin("E1", T + 100),
         outcome("E1", state="ANSWERED"), outcome("E1"), tick(T + 10_000)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -", "tombstone req-1/E1"]),
    Row("a duplicated SENT of a pending push is ignored",
        [assign(), ENROLLED, outcome("E1"), outcome("E1")],
        ["state req-1/E1"]),
    Row("a re-push's own SENT is covered by the original push's verdict",
        [assign(), ENROLLED, outcome("E1", job_id="req-1/E1#r1", repush=1)],
        []),
    Row("a push without PushMagic (APS) expects no check-in",
        [assign(), ENROLLED, outcome("E1", push_magic=None)],
        []),
    Row("a tombstone after an entry in the state topic deletes it",
        [restore(PENDING_E1), restore(None), assign(), ENROLLED, tick(T + 10_000)],
        []),
)
def test_echo(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


@table(
    Row("pushed within seconds of enrollment: re-pushed after the window, the answer names it",
        [assign(), token_update("E1", T - 1_000), outcome("E1"), tick(T + 1_010),
         checkin("E1", T + 1_500)],
        ["state req-1/E1", "job req-1/E1#r1 enrollment_race aaaa", "state req-1/E1",
         "verdict req-1/E1 ANSWERED enrollment_race"]),
    Row("a racer still silent after the re-push is unreachable",
        [assign(), token_update("E1", T - 1_000), outcome("E1"), tick(T + 1_010),
         tick(T + 5_010)],
        ["state req-1/E1", "job req-1/E1#r1 enrollment_race aaaa", "state req-1/E1",
         "alert req-1/E1 DEVICE_UNREACHABLE", "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("not near its enrollment, repush_silent off: no re-push, just the deadline",
        [assign(), ENROLLED, outcome("E1"), tick(T + 1_010), tick(T + 4_990), tick(T + 5_010)],
        ["state req-1/E1", "state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("repush_silent: every silent push is re-pushed once, the answer names the re-push",
        [assign(), ENROLLED, outcome("E1"), tick(T + 1_010), checkin("E1", T + 2_000)],
        ["state req-1/E1", "job req-1/E1#r1 silent aaaa", "state req-1/E1",
         "verdict req-1/E1 ANSWERED answered_after_repush"],
        {"repush_silent": True}),
    Row("answered inside the window: no re-push, no reason",
        [assign(), token_update("E1", T - 1_000), outcome("E1"), checkin("E1", T + 500),
         tick(T + 1_010)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
    Row("a contact before the push, or a TokenUpdate, does not answer it",
        [assign(), ENROLLED, checkin("E1", T - 100), outcome("E1"),
         checkin("E1", T + 100, "AUTHENTICATE"), tick(T + 5_010)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
)
def test_race(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


@table(
    Row("a TokenUpdate with another token after the push: re-pushed to it at once",
        [assign(), ENROLLED, outcome("E1"), token_update("E1", T + 200, TOKEN_B),
         checkin("E1", T + 400)],
        ["state req-1/E1", "job req-1/E1#r1 stale_token bbbb", "state req-1/E1",
         "verdict req-1/E1 ANSWERED stale_token"]),
    Row("a TokenUpdate with the same token changes nothing",
        [assign(), ENROLLED, outcome("E1"), token_update("E1", T + 200, TOKEN_A)],
        ["state req-1/E1"]),
    Row("a second new token is not re-pushed to again",
        [assign(), ENROLLED, outcome("E1"), token_update("E1", T + 200, TOKEN_B),
         token_update("E1", T + 300, TOKEN_C)],
        ["state req-1/E1", "job req-1/E1#r1 stale_token bbbb", "state req-1/E1"]),
    Row("after the race re-push, the new-token re-push is #r2",
        [assign(), token_update("E1", T - 1_000), outcome("E1"), tick(T + 1_010),
         token_update("E1", T + 1_500, TOKEN_B)],
        ["state req-1/E1", "job req-1/E1#r1 enrollment_race aaaa", "state req-1/E1",
         "job req-1/E1#r2 stale_token bbbb", "state req-1/E1"]),
    Row("the new token answered before a race-window re-push is read: still stale_token",
        [assign(), ENROLLED, outcome("E1"), token_update("E1", T + 200, TOKEN_B),
         tick(T + 1_010), checkin("E1", T + 700, now=T + 1_100)],
        ["state req-1/E1", "job req-1/E1#r1 stale_token bbbb", "state req-1/E1",
         "job req-1/E1#r1 silent aaaa", "state req-1/E1",
         "verdict req-1/E1 ANSWERED stale_token"],
        {"repush_silent": True}),
    Row("a newer token dated before the push is found at the deadline and re-pushed to",
        [assign(), ENROLLED, outcome("E1"), token_update("E1", T - 100, TOKEN_B),
         tick(T + 1_010), tick(T + 5_010)],
        ["state req-1/E1", "job req-1/E1#r1 silent aaaa", "state req-1/E1",
         "job req-1/E1#r2 stale_token bbbb", "alert req-1/E1 STALE_TOKEN",
         "verdict req-1/E1 UNANSWERED stale_token"],
        {"repush_silent": True}),
)
def test_stale_token(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


TWINS = [token_update("E1", T - 2 * HOUR, magic="m-E1", udid="U1"),
         token_update("E2", T - HOUR, magic="m-E2", udid="U1")]  # re-enrolled, CheckOut lost
SCHEDULED_E1 = Entry(SCHEDULED, "E1", "req-1", "acme", TOPIC, TOKEN_A, "m-E1", None, T,
                     T - 2 * HOUR, LANE_PRIORITY | WINDOW_DONE, 1, due_at=T + 90_000)


@table(
    Row("a stale PushMagic at the deadline schedules the self-healing push, sent when due",
        [assign(), *TWINS, outcome("E1", token_updated_at=T - 2 * HOUR), tick(T + 1_010),
         tick(T + 5_010), tick(T + 89_000), tick(T + 90_010)],
        ["state req-1/E1", "state req-1/E1", "state req-1/E1#r1",
         "alert req-1/E1 STALE_PUSH_MAGIC", "verdict req-1/E1 UNANSWERED stale_push_magic",
         "job req-1/E1#r1 self_heal aaaa", "tombstone req-1/E1#r1 +after-job"]),
    Row("one self-healing push per enrollment, whatever the number of stale pushes",
        [assign(), *TWINS, outcome("E1", token_updated_at=T - 2 * HOUR),
         outcome("E1", request="req-2", token_updated_at=T - 2 * HOUR), tick(T + 1_010),
         tick(T + 5_010)],
        ["state req-1/E1", "state req-2/E1", "state req-1/E1", "state req-2/E1",
         "state req-1/E1#r1", "alert req-1/E1 STALE_PUSH_MAGIC",
         "verdict req-1/E1 UNANSWERED stale_push_magic", "alert req-2/E1 STALE_PUSH_MAGIC",
         "verdict req-2/E1 UNANSWERED stale_push_magic"]),
    Row("a restored self-healing push is sent when due",
        [restore(SCHEDULED_E1), assign(), tick(T + 89_990), tick(T + 90_010)],
        ["job req-1/E1#r1 self_heal aaaa", "tombstone req-1/E1#r1 +after-job"]),
    Row("a restored self-healing push waits for its partition's gate",
        [restore(SCHEDULED_E1), assign(gate=1), tick(T + 90_010), poison_outcome(),
         tick(T + 90_030)],
        ["dlq outcomes 0@0", "job req-1/E1#r1 self_heal aaaa",
         "tombstone req-1/E1#r1 +after-job"]),
)
def test_self_heal(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


@table(
    Row("a poison check-in is dead-lettered once across replays",
        [dead_lettered({0: 5}), poison_checkin(0, 3),
         poison_checkin(0, 5), poison_checkin(0, 5), poison_checkin(1, 0)],
        ["dlq checkins 0@5", "dlq checkins 1@0"]),
    Row("a FAILED outcome naming a wrong topic gets an alert and no verdict",
        [assign(), ENROLLED, outcome("E1", state="FAILED", reason="DeviceTokenNotForTopic"),
         tick(T + 10_000)],
        ["alert req-1/E1 WRONG_TOPIC"]),
)
def test_poison_and_failed(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


def test_the_default_race_enrollment_window_covers_the_pipelines_enrollment_to_push_lag() -> None:
    """bench_accuracy measured fresh enrollments pushed up to 18.2 s after enrolling on a loaded
    host (R-ACC-2): such a push lost and answered after the re-push is named the race."""
    defaults = CorrelatorSettings()
    pushed = T + 18_200
    re_push = pushed + defaults.race_window_ms
    steps = [assign(), token_update("E1", T), outcome("E1", at=pushed), tick(re_push + 10),
             checkin("E1", re_push + 500)]
    assert play(steps, race_window_ms=defaults.race_window_ms, deadline_ms=defaults.deadline_ms,
                race_enrollment_ms=defaults.race_enrollment_ms, repush_silent=True) == [
        "state req-1/E1", "job req-1/E1#r1 enrollment_race aaaa", "state req-1/E1",
        "verdict req-1/E1 ANSWERED enrollment_race"]


GRACE = {"checkin_grace_ms": 2_000}
SILENT_E1 = Entry(PENDING, "E1", "req-1", "acme", TOPIC, TOKEN_A, "m-E1", None, T, T - HOUR,
                  LANE_PRIORITY | WINDOW_DONE, 0, due_at=T + 5_000)  # written before the grace
UNANSWERED_E1 = ["alert req-1/E1 DEVICE_UNREACHABLE",
                 "verdict req-1/E1 UNANSWERED device_unreachable"]


@table(
    Row("an answer stamped before the deadline but read after it, within the grace, answers",
        [assign(), ENROLLED, outcome("E1"), tick(T + 1_010), tick(T + 5_010),
         checkin("E1", T + 4_000, now=T + 6_000), tick(T + 7_010)],
        ["state req-1/E1", "state req-1/E1", "verdict req-1/E1 ANSWERED -"], GRACE),
    Row("an answer stamped after the deadline, read within the grace, leaves it UNANSWERED",
        [assign(), ENROLLED, outcome("E1"), tick(T + 1_010),
         checkin("E1", T + 5_500, now=T + 5_600), tick(T + 6_990), tick(T + 7_010)],
        ["state req-1/E1", "state req-1/E1", *UNANSWERED_E1], GRACE),
    Row("an in-time answer read after the grace is too late: UNANSWERED at the grace's end",
        [assign(), ENROLLED, outcome("E1"), tick(T + 1_010), tick(T + 7_010),
         checkin("E1", T + 4_000, now=T + 7_100)],
        ["state req-1/E1", "state req-1/E1", *UNANSWERED_E1], GRACE),
    Row("a race window as long as the deadline: the verdict still waits for the grace",
        [assign(), ENROLLED, outcome("E1"), tick(T + 5_010), tick(T + 6_990),
         tick(T + 7_010)],
        ["state req-1/E1", *UNANSWERED_E1], {**GRACE, "race_window_ms": 5_000}),
    Row("an entry restored from before the grace existed (due at its deadline) gets the grace",
        [restore(SILENT_E1), assign(), ENROLLED, tick(T + 5_010),
         checkin("E1", T + 4_900, now=T + 5_500)],
        ["verdict req-1/E1 ANSWERED -"], GRACE),
    Row("a restored entry whose answer after the deadline was replayed is not answered by it",
        [restore(SILENT_E1), ENROLLED, checkin("E1", T + 5_500, now=T + 5_600), assign(gate=1),
         poison_outcome(), tick(T + 7_010)],
        ["dlq outcomes 0@0", *UNANSWERED_E1], GRACE),
)
def test_checkin_grace(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


def test_the_alert_names_the_deadline_and_is_flagged_after_the_grace() -> None:
    run = Run(**GRACE)
    for step in [assign(), ENROLLED, outcome("E1"), tick(T + 1_010), tick(T + 7_010)]:
        run.effects.extend(step(run))
    (alert,) = [e.record for e in run.effects if isinstance(e, Alert)]
    (verdict,) = [e.record for e in run.effects if isinstance(e, Verdict)]
    assert (alert["deadline_at"], alert["flagged_at"]) == (T + 5_000, T + 7_010)
    assert verdict["state"] == "UNANSWERED"


YEAR_3000 = 32_503_680_000_000


@table(
    Row("a push stamped in the far future is judged as sent now (R-FUZZ-5)",
        [assign(), ENROLLED, outcome("E1", at=YEAR_3000, now=T), tick(T + 5_010)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("a push stamped within the tolerance keeps its time",
        [assign(), ENROLLED, outcome("E1", at=T + 1_000, now=T), tick(T + 5_010)],
        ["state req-1/E1", "state req-1/E1"]),  # its race window passed, not its deadline
    Row("a negative re-push count is a first push (R-FUZZ-5)",
        [assign(), ENROLLED, outcome("E1", repush=-5, attempt=-5), checkin("E1", T + 100)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
    Row("a check-in from the far future is read as now: it answers no later push",
        [assign(), ENROLLED, checkin("E1", YEAR_3000, now=T), outcome("E1", at=T + 1_000),
         tick(T + 6_010)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
)
def test_out_of_range(row: Row) -> None:
    assert play(row.steps, future_tolerance_ms=2_000, **row.settings) == row.expected


def test_the_second_stale_push_is_told_the_healing_push_is_already_scheduled() -> None:
    run = Run()
    for step in [assign(), *TWINS, outcome("E1", token_updated_at=T - 2 * HOUR),
                 outcome("E1", request="req-2", token_updated_at=T - 2 * HOUR), tick(T + 5_010)]:
        run.effects.extend(step(run))
    actions = [e.record["action"] for e in run.effects if isinstance(e, Alert)]
    assert actions == [f"self-healing push req-1/E1#r1 scheduled at {T + 90_000}",
                       f"self-healing push already scheduled at {T + 90_000}"]


def test_only_verdicts_and_sent_pushes_tombstones_follow_the_prerequisites() -> None:
    entry = PENDING_E1
    assert not is_prerequisite(Verdict(0, {}))
    assert not is_prerequisite(StateWrite(0, "j#r1", None, after_job=True))
    assert is_prerequisite(StateWrite(0, "j", None))
    assert is_prerequisite(StateWrite(0, "j", entry))
    assert is_prerequisite(Alert({}))


@table(
    Row("a contact from another tenant does not answer the owner's push",
        [assign(), ENROLLED, outcome("E1"), checkin("E1", T + 100, tenant="globex"),
         tick(T + 10_000)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("a contact naming no tenant does not answer it either",
        [assign(), ENROLLED, outcome("E1"), checkin("E1", T + 100, tenant=""),
         tick(T + 10_000)],
        ["state req-1/E1", "alert req-1/E1 DEVICE_UNREACHABLE",
         "verdict req-1/E1 UNANSWERED device_unreachable"]),
    Row("another tenant's TokenUpdate gives no re-push its token",
        [assign(), ENROLLED, outcome("E1"),
         checkin("E1", T + 100, "TOKEN_UPDATE", topic=TOPIC, token_hex=TOKEN_B,
                 push_magic="m-E1", tenant="globex"),
         checkin("E1", T + 200)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
    Row("the owner's own contact still answers",
        [assign(), ENROLLED, outcome("E1"), checkin("E1", T + 100, tenant="globex"),
         checkin("E1", T + 200)],
        ["state req-1/E1", "verdict req-1/E1 ANSWERED -"]),
)
def test_tenants(row: Row) -> None:
    assert play(row.steps, **row.settings) == row.expected


def test_only_foreign_checkins_are_counted() -> None:
    run = Run()
    for step in (ENROLLED, checkin("E1", T, tenant="globex"), checkin("E1", T, tenant=""),
                 checkin("E1", T), checkin("E2", T, tenant="")):  # E2 has no owner yet
        step(run)
    assert run.core.foreign_checkins == 2


def test_an_instance_holds_only_the_enrollments_of_its_partitions() -> None:
    core = Run().core  # owns partition 0 of 1; two partitions below
    core.partition_count = 2
    mine, theirs = (next(e for e in (f"E{i}" for i in range(100))
                         if zlib.crc32(e.encode()) % 2 == p) for p in (0, 1))
    core.take([0])
    for e in (mine, theirs):
        core.checkin({"event_id": e, "enrollment_id": e, "tenant": "acme",
                      "message_type": "TOKEN_UPDATE", "udid": e, "topic": TOPIC,
                      "token_hex": TOKEN_A, "push_magic": "m", "occurred_at": T - HOUR}, T)
        core.activity({"tenant": "acme", "enrollment_id": e, "state": "INACTIVE",
                       "last_contact_at": T - HOUR, "at": T, "rearmed_at": None})
    assert core.book.ids.get(mine) is not None and core.book.ids.get(theirs) is None
    assert core.care.inactive == 1
    core.revoke([0])  # nothing owned any more: the book goes with the pushes
    assert len(core.book.ids) == 0 and core.care.inactive == 0
