"""The correlator's rules: outcomes ⨝ check-ins per enrollment, timers, verdicts, re-pushes.

Pure: it takes decoded records with the partition/offset facts it needs and the time, and returns
effects (effects.py) for the runner to write. No Kafka, no clock, no metrics, so every rule is a
table test (tests/correlator/test_core.py).

The rules the restart guarantees rest on (runner.py says how the runner keeps its side):
- Gate: an outcomes partition assigned with records still to read is "gated" until the offset it
  had at assignment has been read: no verdict and no timer for its pushes until then, because a
  restored entry may yet meet its own verdict's echo further on. Contacts seen meanwhile are
  kept in the enrollment book; opening the gate answers the pushes they answer.
- Echo: the core's own verdict read back from the outcomes topic is durable, so the entry is
  dropped and its state entry tombstoned; a SENT outcome re-read after its echo is ignored.
- Race window: silent `race_window_ms` after the push, one re-push (`#r1`) of the same trifecta
  (always with `repush_silent`, else only within `race_enrollment_ms` of the enrollment).
- Stale token: a TokenUpdate after the push with another token re-pushes at once to it.
- Deadline: silent `deadline_ms` after the push, UNANSWERED with a diagnosis (diagnose.py) and an
  alert; a stale token is re-pushed to the new one, a stale PushMagic schedules the self-healing
  push `self_heal_delay_ms` after the first (one per enrollment). Judged by event time: only an
  answer stamped between the push and its deadline answers it, and the verdict waits
  `checkin_grace_ms` past the deadline for such answers read late (`_answers`).
- Riders (docs/CONTRACTS.md, coalescing): a SKIPPED "coalesced" outcome is a request riding on
  another job's push (its carrier, same enrollment). It gets the carrier's verdict when that is
  given, or the carrier's FAILED/DEAD_LETTERED; a carrier already closed or unknown leaves it
  to judge itself as a push sent at its own `at`: a contact after it answers it, none by the
  deadline makes it UNANSWERED (no alert: the carrier's alert covers the device).
- Care (care.py): silent enrollments get one re-arm push, then INACTIVE; the next contact makes
  them ACTIVE again.
- Bound: at most `max_enrollments` rows; past it, check-ins of enrollments never seen before are
  refused and counted (`refused_enrollments`), so made-up ids cannot grow the state forever.
- Partitions: an instance holds only the enrollments of the outcomes partitions it owns (the
  partition `crc32(enrollment id)` maps to, where the enrollment's outcomes and check-ins are
  keyed); check-ins and activity records of other enrollments are ignored, and once every
  partition is revoked the book is dropped with the pushes (the next assignment rebuilds both).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from services.common.accounting import COALESCED
from services.correlator import records
from services.correlator.care import Care, stable_hash
from services.correlator.diagnose import (
    Diagnosis,
    EnrollmentFacts,
    PushFacts,
    diagnose,
    failed_topic_finding,
    in_enrollment_race,
)
from services.correlator.effects import (
    Alert,
    DeadLetter,
    Effect,
    RepushCause,
    RepushJob,
    Source,
    StateWrite,
    Verdict,
)
from services.correlator.enrollments import EnrollmentBook
from services.correlator.inputs import checkin_in_range, outcome_in_range
from services.correlator.packed import Interner
from services.correlator.pending import (
    NEW_TOKEN,
    PENDING,
    RACE,
    RIDER,
    SCHEDULED,
    WINDOW_DONE,
    Entry,
    PendingStore,
    job_id,
    lane_flag,
    parse_job_id,
)
from services.correlator.recent import RecentIds
from services.correlator.settings import CorrelatorSettings

#: A re-push of the race window is `#r1`; follow-ups after the verdict take the next number.
RACE_REPUSH = 1
VERDICT_STATES = frozenset({"ANSWERED", "UNANSWERED"})
#: A carrier ending in one of these passes it on to its riders.
CARRIER_FAILURES = frozenset({"FAILED", "DEAD_LETTERED"})
#: The reason of a rider closed by its carrier's failure starts with this (so its echo is known).
CARRIER_FAILED_PREFIX = "carrier "
#: The gate of a partition taken but not yet restored: no offset opens it, only `assign`.
RESTORING = sys.maxsize


class CorrelatorCore:
    """Every input method returns the effects it caused, in the order they arose."""

    def __init__(self, settings: CorrelatorSettings) -> None:
        self.s = settings
        self._new_book()
        #: outcomes partition -> offset it must be read up to before it may give verdicts.
        self.gates: dict[int, int] = {}
        self.owned: set[int] = set()
        #: Job ids whose verdict was given recently (bounded, fixed memory: recent.py), to drop
        #: a re-read SENT outcome.
        self.done = RecentIds(settings.dedupe_capacity)
        #: Job ids that ended FAILED/DEAD_LETTERED recently (bounded) tagged with that state,
        #: for a rider seen after its carrier failed. Apart from `done`: a dead letter replayed
        #: by `mdmpush dlq replay` may be SENT again and is then judged like any push.
        self.failed = RecentIds(settings.dedupe_capacity, sorted(CARRIER_FAILURES))
        #: check-ins partition -> first offset not yet dead-lettered (the check-ins group's
        #: committed offsets: the replay re-reads every poison record and must not repeat it).
        self.checkins_dead_lettered: dict[int, int] = {}
        #: Check-ins refused because they name another tenant than the enrollment's owner.
        self.foreign_checkins = 0
        #: Check-ins refused because the book was full and their enrollment new.
        self.refused_enrollments = 0
        #: Outcomes partitions in all (care acts on the enrollments of the partitions it owns).
        self.partition_count = 1
        self._out: list[Effect] = []

    def _new_book(self) -> None:
        """Empty enrollment book, pending store and care (at start, and once every partition
        is revoked: the next owner of a partition rebuilds its part from Kafka). The care
        counters are running totals and carry over."""
        old = getattr(self, "care", None)
        enrollments, push_topics = Interner(), Interner()
        self.book = EnrollmentBook(enrollments, push_topics)
        self.store = PendingStore(enrollments, push_topics, self.s.timer_tick_ms)
        #: Enrollment row -> its owning tenant (interned), -1 until a check-in names one.
        self._tenants = Interner()
        self._owner = array("i")
        self.care = Care(self.s, self.book, self._owns_row, self._tenant_of)
        if old is not None:
            self.care.rearms, self.care.answered_after_rearm = old.rearms, old.answered_after_rearm

    def _effects(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    # -- partitions --------------------------------------------------------------------------
    def restore(self, partition: int, job_id: str, entry: Entry | None) -> None:
        """One record of state partition `partition`, in log order: later entries replace
        earlier ones, tombstones delete."""
        if entry is not None:
            self._put(entry, partition, write=False)
            return
        parsed = parse_job_id(job_id)
        if parsed is not None:
            request_id, enrollment_id, repush = parsed
            slot = (self.store.find(enrollment_id, request_id, SCHEDULED, repush) if repush
                    else self._awaiting(enrollment_id, request_id))
            if slot is not None:
                self.store.free(slot)

    def take(self, partitions: Iterable[int]) -> None:
        """Outcomes partitions assigned, before their state and check-ins are read: their
        enrollments' records are kept from now on, and nothing of theirs is judged until
        `assign`."""
        for p in partitions:
            self.owned.add(p)
            self.gates[p] = RESTORING

    def owns(self, enrollment_id: str) -> bool:
        """Whether the enrollment's records belong to an outcomes partition this instance owns
        (crc32 of the id, like librdkafka's partitioner for keyed records)."""
        return stable_hash(enrollment_id) % self.partition_count in self.owned

    def assign(self, partition: int, gate_offset: int | None) -> list[Effect]:
        """Outcomes partition assigned (its state already restored). `gate_offset`: the end
        offset it had at assignment when records up to it remain to be read, else None."""
        self.owned.add(partition)
        if gate_offset is None:
            self._open_gate(partition)
        else:
            self.gates[partition] = gate_offset
        return self._effects()

    def revoke(self, partitions: Iterable[int]) -> int:
        """Partitions taken away: forget their pushes (the new owner restores them), and the
        whole book once none is left (an eager rebalance revokes all); returns how many
        pushes were dropped."""
        lost = set(partitions)
        self.owned -= lost
        for p in lost:
            self.gates.pop(p, None)
        dropped = self.store.free_partitions(lost)
        if not self.owned:
            self._new_book()
        return dropped

    def _open_gate(self, p: int) -> None:
        """Partition p has caught up: its pushes may now be judged (contacts seen meanwhile)."""
        self.gates.pop(p, None)
        for slot in self.store.awaiting_in(p):
            if not (self.store.is_pending(slot) or self.store.is_rider(slot)):
                continue  # closed meanwhile (a rider by its carrier's verdict)
            if self.store.is_rider(slot):
                self._settle_rider(slot)
                continue
            contact = self.book.last_answer(self.store.enrollment_of(slot))
            if self._answers(slot, contact):
                self._answer(slot, contact)

    def _judging(self, p: int) -> bool:
        return p in self.owned and p not in self.gates

    # -- check-ins ---------------------------------------------------------------------------
    def mark_dead_lettered(self, committed: Mapping[int, int]) -> None:
        """Check-ins before these offsets (per partition) were dead-lettered already."""
        self.checkins_dead_lettered.update(committed)

    def checkin(self, event: dict[str, Any], now: int) -> list[Effect]:
        """One decoded CheckinEvent: fold it in; answer or re-push the pushes it concerns.

        A check-in naming another tenant than the enrollment's (see `_foreign`) is refused and
        counted in `foreign_checkins`: it must not answer another tenant's push, nor give a
        re-push a token that tenant chose.
        """
        if not self.owns(event["enrollment_id"]):
            return self._effects()  # another instance's enrollment
        event = checkin_in_range(event, now, self.s.future_tolerance_ms)
        if (self.book.ids.get(event["enrollment_id"]) is None
                and len(self.book.ids) >= self.s.max_enrollments):
            self.refused_enrollments += 1
            return self._effects()
        if self._foreign(event):
            self.foreign_checkins += 1
            return self._effects()
        previous = self.book.last_contact(self.book.index(event["enrollment_id"]))
        enr, answered_at = self.book.apply(event)
        self._out += self.care.contact(enr, previous, int(event["occurred_at"]), now)
        for slot in self.store.slots_of(enr):
            if self.store.is_free(slot) or not self._judging(self.store.partition_of(slot)):
                continue
            if self.store.is_rider(slot):
                if self._answers(slot, answered_at):
                    self._close_rider(slot, "ANSWERED", answered_at)
            elif not self.store.is_pending(slot):
                continue
            elif self._answers(slot, answered_at):
                self._answer(slot, answered_at)
            elif self._new_token(event, slot):
                self._repush_to_new_token(slot, now)
        return self._effects()

    def _foreign(self, event: dict[str, Any]) -> bool:
        """The same rule as the fan-out's registry: the first tenant a check-in names owns the
        enrollment; later check-ins naming another tenant, or none, are foreign."""
        enr = self.book.index(event["enrollment_id"])
        while len(self._owner) <= enr:
            self._owner.append(-1)
        tenant = event.get("tenant") or ""
        owner = self._owner[enr]
        if owner < 0:
            if tenant:
                self._owner[enr] = self._tenants.intern(tenant)
            return False
        return self._tenants.get(tenant) != owner

    def poison_checkin(self, partition: int, offset: int, reason: str) -> list[Effect]:
        """An undecodable check-in: dead-lettered, unless an earlier run already did."""
        if offset >= self.checkins_dead_lettered.get(partition, -1):
            self._out.append(DeadLetter(Source.CHECKINS, partition, offset, reason))
            self.checkins_dead_lettered[partition] = offset + 1
        return self._effects()

    def _new_token(self, event: dict[str, Any], slot: int) -> bool:
        """A TokenUpdate after the push, with a token other than the one pushed to."""
        return (event["message_type"] == "TOKEN_UPDATE" and bool(event.get("token_hex"))
                and int(event["occurred_at"]) >= self.store.pushed_at_of(slot)
                and not self.store.has_flag(slot, NEW_TOKEN)
                and self.store.entry(slot).token_hex != event["token_hex"])

    def _repush_to_new_token(self, slot: int, now: int) -> None:
        """Stale token, seen as it happens: re-push at once to the token the device now has."""
        entry = self.store.entry(slot)
        facts = self.book.facts(self.store.enrollment_of(slot))
        job = records.push_job(entry, 2 if entry.repushed_at else 1, now, topic=facts.topic,
                               token_hex=facts.token_hex, push_magic=facts.push_magic,
                               token_updated_at=facts.token_updated_at)
        self._out.append(RepushJob(job, RepushCause.STALE_TOKEN))
        self.store.record_repush(slot, now, NEW_TOKEN)
        self._write_state(slot)

    # -- outcomes ----------------------------------------------------------------------------
    def outcome(self, record: dict[str, Any], partition: int, offset: int, now: int
                ) -> list[Effect]:
        """One decoded PushOutcome read at (partition, offset); a future time or negative count
        is read in range first (inputs.py)."""
        record = outcome_in_range(record, now, self.s.future_tolerance_ms)
        state = record["state"]
        if state == "SENT":
            self._on_sent(record, partition)
        elif state in VERDICT_STATES or _rider_failure(record):
            self._on_echo(record, partition)
        elif state == "SKIPPED" and record.get("reason") == COALESCED:
            self._on_rider(record, partition)
        elif state in CARRIER_FAILURES:
            self._on_failed(record, partition, now)
        self._read_up_to(partition, offset)
        return self._effects()

    def poison_outcome(self, partition: int, offset: int, reason: str) -> list[Effect]:
        """An undecodable outcome: dead-lettered; it still counts toward the gate."""
        self._out.append(DeadLetter(Source.OUTCOMES, partition, offset, reason))
        self._read_up_to(partition, offset)
        return self._effects()

    def _read_up_to(self, p: int, offset: int) -> None:
        gate = self.gates.get(p)
        if gate is not None and offset + 1 >= gate:
            self._open_gate(p)

    def _on_sent(self, rec: dict[str, Any], p: int) -> None:
        # Re-pushes are covered by the original push's verdict; APS pushes (no PushMagic) do not
        # wake the MDM client, so no check-in is expected of them.
        if rec["repush"] or rec["push_magic"] is None or rec["job_id"] in self.done:
            return
        if self.store.find(rec["enrollment_id"], rec["request_id"], PENDING, 0) is not None:
            return
        entry = Entry(
            PENDING, rec["enrollment_id"], rec["request_id"], rec["tenant"], rec["topic"],
            rec["token_hex"], rec["push_magic"], rec["apns_id"], int(rec["at"]),
            rec["token_updated_at"], lane_flag(rec["lane"]), 0,
        )
        slot = self._put(entry, p, write=True)
        self.book.learn_trifecta(self.book.index(entry.enrollment_id), entry.topic,
                                 entry.token_hex, entry.push_magic, entry.token_updated_at)
        contact = self.book.last_answer(self.store.enrollment_of(slot))
        if p not in self.gates and self._answers(slot, contact):
            self._answer(slot, contact)

    def _put(self, entry: Entry, p: int, write: bool) -> int:
        """Add (or, on restore, replace) an entry, arm its timer, mirror it to the changelog."""
        existing = self.store.find(entry.enrollment_id, entry.request_id, entry.kind,
                                   entry.repush)
        if existing is not None:
            self.store.free(existing)
        slot = self.store.add(entry, p)
        if entry.kind == SCHEDULED:
            self.store.arm(slot, entry.due_at)
        elif entry.kind == RIDER or entry.flags & WINDOW_DONE:
            self.store.arm(slot, self._verdict_due(entry.pushed_at))
        else:
            self.store.arm(slot, entry.pushed_at + min(self.s.race_window_ms, self.s.deadline_ms))
        if write:
            self._write_state(slot)
        return slot

    def _write_state(self, slot: int) -> None:
        entry = self.store.entry(slot)
        self._out.append(StateWrite(self.store.partition_of(slot), entry.job_id, entry))

    def _on_echo(self, rec: dict[str, Any], p: int) -> None:
        """Our own verdict, read back: it is durable, so the changelog entry can go."""
        slot = self._awaiting(rec["enrollment_id"], rec["request_id"])
        if slot is not None:
            self.store.free(slot)
        self.done.remember(rec["job_id"])
        self._out.append(StateWrite(p, rec["job_id"], None))

    def _awaiting(self, enrollment_id: str, request_id: str) -> int | None:
        """The slot waiting for this (request, enrollment)'s verdict: a push or a rider."""
        slot = self.store.find(enrollment_id, request_id, PENDING, 0)
        return slot if slot is not None else self.store.find(enrollment_id, request_id,
                                                              RIDER, 0)

    def _on_failed(self, rec: dict[str, Any], p: int, now: int) -> None:
        """The sender's FAILED/DEAD_LETTERED: its riders share it; a topic refusal is alerted."""
        if rec["repush"] == 0:
            self.failed.remember(rec["job_id"], rec["state"])
            if self._judging(p):
                self._close_riders(rec["enrollment_id"], rec["request_id"], rec["state"],
                                   int(rec["at"]))
        if rec["state"] != "FAILED":
            return
        enr = self.book.index(rec["enrollment_id"])
        finding = failed_topic_finding(rec["reason"], self.book.facts(enr))
        if finding is None:
            return
        at = int(rec["at"])
        entry = Entry(PENDING, rec["enrollment_id"], rec["request_id"], rec["tenant"],
                      rec["topic"], rec["token_hex"], rec["push_magic"], rec["apns_id"], at,
                      rec["token_updated_at"], lane_flag(rec["lane"]), rec["repush"])
        contact = self.book.last_contact(enr) or None
        self._out.append(Alert(records.alert(entry, finding, "none: APNs refused the push", at,
                                             now, contact)))

    # -- timers and verdicts -----------------------------------------------------------------
    def tick(self, now: int) -> list[Effect]:
        """The clock reached `now`: fire due timers (deferred a tick while gated), then care
        for the next rows of silent enrollments."""
        for slot in self.store.pop_due(now):
            if self.store.is_free(slot):
                continue  # a rider closed by its carrier's verdict earlier in this tick
            if not self._judging(self.store.partition_of(slot)):
                self.store.arm(slot, now + self.store.tick_ms)
            elif self.store.is_rider(slot):
                self._rider_deadline(slot)
            elif self.store.is_scheduled(slot):
                self._send_scheduled(slot, now)
            elif (now < self.store.pushed_at_of(slot) + self.s.deadline_ms
                  and not self.store.has_flag(slot, WINDOW_DONE)):
                self._race_window(slot, now)
            elif now < self._verdict_due(self.store.pushed_at_of(slot)):
                # A race window as long as the deadline (or an entry restored before it had its
                # verdict due): the grace still runs.
                self.store.arm(slot, self._verdict_due(self.store.pushed_at_of(slot)))
            else:
                self._deadline(slot, now)
        self._out += self.care.sweep(now)
        return self._effects()

    def _race_window(self, slot: int, now: int) -> None:
        """Silent after the race window: one re-push (`#r1`) of the same trifecta."""
        entry = self.store.entry(slot)
        race = in_enrollment_race(entry.pushed_at, self.book.facts(
            self.store.enrollment_of(slot)).enrolled_at, self.s.race_enrollment_ms)
        if race or self.s.repush_silent:
            cause = RepushCause.ENROLLMENT_RACE if race else RepushCause.SILENT
            self._out.append(RepushJob(records.push_job(entry, RACE_REPUSH, now), cause))
            self.store.record_repush(slot, now, WINDOW_DONE | (RACE if race else 0))
        else:
            self.store.mark(slot, WINDOW_DONE)
        self.store.arm(slot, self._verdict_due(entry.pushed_at))
        self._write_state(slot)

    def _verdict_due(self, pushed_at: int) -> int:
        """When a push still unanswered is judged: `checkin_grace_ms` after its deadline, so an
        answer the device made in time but that reached us late (a slow gateway, check-in lag)
        is read before the verdict."""
        return pushed_at + self.s.deadline_ms + self.s.checkin_grace_ms

    def _answers(self, slot: int, contact_at: int) -> bool:
        """Whether an answer stamped `contact_at` answers the push (or rider) in `slot`: only
        one stamped between the push and its deadline does. By event time, not arrival: a
        poll stamped before the push is not an answer to it, one stamped after the deadline
        leaves it UNANSWERED even when read within the grace (the deadline is the contract).
        The book keeps an enrollment's last answer only, so a push first judged after the
        device answered in time and again after its deadline (a restart's replay reading both
        before the push's gate opens) is judged by the later one."""
        pushed_at = self.store.pushed_at_of(slot)
        return pushed_at <= contact_at <= pushed_at + self.s.deadline_ms

    def _deadline(self, slot: int, now: int) -> None:
        enr = self.store.enrollment_of(slot)
        contact = self.book.last_answer(enr)
        if self._answers(slot, contact):
            self._answer(slot, contact)
            return
        entry = self.store.entry(slot)
        facts = self.book.facts(enr)
        push = PushFacts(entry.pushed_at, entry.topic, entry.token_hex, entry.push_magic,
                         entry.token_updated_at, entry.repushed_at > 0)
        finding = diagnose(push, facts, self.book.siblings(enr), self.s.race_enrollment_ms)
        action = self._act(entry, finding.diagnosis, facts, self.store.partition_of(slot), now)
        deadline_at = entry.pushed_at + self.s.deadline_ms
        self._out.append(Alert(records.alert(entry, finding, action, deadline_at, now,
                                             facts.last_contact_at), at_deadline=True))
        self._give_verdict(slot, entry, "UNANSWERED", now, None, finding.diagnosis.value.lower())

    def _act(self, entry: Entry, diagnosis: Diagnosis, facts: EnrollmentFacts, p: int,
             now: int) -> str:
        """The follow-up a diagnosis calls for; returns it in words for the alert."""
        next_repush = 2 if entry.repushed_at else 1
        if diagnosis is Diagnosis.STALE_TOKEN:
            job = records.push_job(entry, next_repush, now, topic=facts.topic,
                                   token_hex=facts.token_hex, push_magic=facts.push_magic,
                                   token_updated_at=facts.token_updated_at)
            self._out.append(RepushJob(job, RepushCause.STALE_TOKEN))
            return f"re-pushed to the new token as {job['job_id']}"
        if diagnosis is Diagnosis.STALE_PUSH_MAGIC:
            return self._schedule_self_heal(entry, next_repush, p)
        return "none"

    def _schedule_self_heal(self, entry: Entry, repush: int, p: int) -> str:
        """Seed: a wrong-magic push >= 25 h after the first one makes the device TokenUpdate."""
        for slot in self.store.slots_of(self.book.index(entry.enrollment_id)):
            if self.store.is_scheduled(slot):
                return f"self-healing push already scheduled at {self.store.due_at_of(slot)}"
        due = entry.pushed_at + self.s.self_heal_delay_ms
        scheduled = Entry(SCHEDULED, entry.enrollment_id, entry.request_id, entry.tenant,
                          entry.topic, entry.token_hex, entry.push_magic, None, entry.pushed_at,
                          entry.token_updated_at, entry.flags, repush, due_at=due)
        self._put(scheduled, p, write=True)
        return f"self-healing push {scheduled.job_id} scheduled at {due}"

    def _send_scheduled(self, slot: int, now: int) -> None:
        entry = self.store.entry(slot)
        self._out.append(RepushJob(records.push_job(entry, entry.repush, now),
                                   RepushCause.SELF_HEAL))
        self._out.append(StateWrite(self.store.partition_of(slot), entry.job_id, None,
                                    after_job=True))
        self.store.free(slot)

    def _answer(self, slot: int, contact_at: int) -> None:
        entry = self.store.entry(slot)
        self._give_verdict(slot, entry, "ANSWERED", contact_at,
                           float(contact_at - entry.pushed_at), "")

    def _give_verdict(self, slot: int, entry: Entry, state: str, at: int,
                      latency_ms: float | None, diagnosis: str) -> None:
        record = records.verdict(entry, state, at, latency_ms,
                                 diagnosis or _answer_reason(entry, at))
        self._out.append(Verdict(self.store.partition_of(slot), record))
        self.done.remember(entry.job_id)
        self.store.free(slot)
        self._close_riders(entry.enrollment_id, entry.request_id, state, at)

    # -- riders ------------------------------------------------------------------------------
    def _on_rider(self, rec: dict[str, Any], p: int) -> None:
        """A request coalesced onto an outstanding push: wait for that push's verdict."""
        if rec["job_id"] in self.done or self._awaiting(rec["enrollment_id"],
                                                        rec["request_id"]) is not None:
            return
        carrier = parse_job_id(rec.get("rides_on") or "")
        entry = Entry(RIDER, rec["enrollment_id"], rec["request_id"], rec["tenant"],
                      rec["topic"], rec["token_hex"], rec["push_magic"], None, int(rec["at"]),
                      rec["token_updated_at"], lane_flag(rec["lane"]), 0,
                      rides_on=carrier[0] if carrier else "")
        slot = self._put(entry, p, write=True)
        if self._judging(p):
            self._settle_rider(slot)

    def _settle_rider(self, slot: int) -> None:
        """A rider whose carrier may be closed already: a failed carrier passes its state on;
        otherwise a contact after the rider's own time answers it."""
        enr = self.store.enrollment_of(slot)
        carrier = job_id(self.store.carrier_of(slot) or "", self.book.ids.string(enr))
        carrier_state = self.failed.get(carrier)
        if carrier_state in CARRIER_FAILURES:
            self._close_rider(slot, carrier_state, self.store.pushed_at_of(slot))
            return
        contact = self.book.last_answer(enr)
        if self._answers(slot, contact):
            self._close_rider(slot, "ANSWERED", contact)

    def _close_riders(self, enrollment_id: str, carrier_request: str, state: str,
                      at: int) -> None:
        enr = self.book.ids.get(enrollment_id)
        if enr is None:
            return
        for slot in self.store.slots_of(enr):
            if self.store.is_rider(slot) and self.store.carrier_of(slot) == carrier_request:
                self._close_rider(slot, state, at)

    def _rider_deadline(self, slot: int) -> None:
        """No carrier verdict reached the rider by its own deadline: judge it by contact."""
        contact = self.book.last_answer(self.store.enrollment_of(slot))
        if self._answers(slot, contact):
            self._close_rider(slot, "ANSWERED", contact)
        else:
            self._close_rider(slot, "UNANSWERED", self.store.pushed_at_of(slot)
                              + self.s.deadline_ms)

    def _close_rider(self, slot: int, state: str, at: int) -> None:
        entry = self.store.entry(slot)
        carrier = job_id(entry.rides_on or "", entry.enrollment_id)
        reason = (f"{CARRIER_FAILED_PREFIX}{carrier} {state}" if state in CARRIER_FAILURES
                  else f"coalesced onto {carrier}")
        latency = float(at - entry.pushed_at) if state == "ANSWERED" else None
        record = records.verdict(entry, state, at, latency, reason)
        self._out.append(Verdict(self.store.partition_of(slot), record))
        self.done.remember(entry.job_id)
        self.store.free(slot)

    # -- care --------------------------------------------------------------------------------
    def _owns_row(self, enr: int) -> bool:
        """Whether this instance cares for the enrollment now: it judges the outcomes
        partition the enrollment's records are keyed to."""
        p = stable_hash(self.book.ids.string(enr)) % self.partition_count
        return self._judging(p)

    def _tenant_of(self, enr: int) -> str:
        owner = self._owner[enr] if enr < len(self._owner) else -1
        return self._tenants.string(owner) if owner >= 0 else ""

    def activity(self, record: dict[str, Any]) -> None:
        """An EnrollmentActivity record read back from its topic (another instance's
        enrollment: ignored)."""
        if self.owns(record["enrollment_id"]):
            self.care.restore(record)


def _answer_reason(entry: Entry, contact_at: int) -> str | None:
    """The re-push that got the answer, named by what it repaired."""
    if entry.repushed_at and contact_at >= entry.repushed_at:
        if entry.flags & NEW_TOKEN:
            return "stale_token"
        return "enrollment_race" if entry.flags & RACE else "answered_after_repush"
    return None


def _rider_failure(record: dict[str, Any]) -> bool:
    """A rider's FAILED/DEAD_LETTERED verdict written by the correlator itself (an echo)."""
    return (record["state"] in CARRIER_FAILURES
            and (record.get("reason") or "").startswith(CARRIER_FAILED_PREFIX))
