"""Silent-device care: one re-arm push after `rearm_after_ms` of silence, INACTIVE after
`inactive_after_ms`, ACTIVE again at the next contact (docs/fleet-care.md).

"APNs said 200 but the device never checked in" is mostly a device whose push connection went
stale; one fresh push usually re-arms it, and Apple treats a device silent for about a week as
inactive. So every enrollment the correlator knows gets, per silence (the time since its last
contact of any kind):
- one re-arm push, due at `last_contact + rearm_after + offset`, where `offset` is a stable hash
  of the enrollment id within `rearm_spread_ms`: a fleet that went silent at once (an outage)
  is re-armed over the spread window, never in one burst; `rearm_per_minute` caps the rate on
  top (the sender's bulk throttle applies too);
- past `inactive_after_ms`, an INACTIVE record on the compacted activity topic; the fan-out
  skips bulk pushes to it; the next contact writes ACTIVE.

Pure like the core: the rows are the enrollment book's, scanned `care_scan_rows` per turn by a
cursor (bounded work per loop turn, no heap entry per enrollment). Only the instance owning an
enrollment's outcomes partition acts on it (it is the only one holding it: runner.py). What was
written survives a restart in the activity topic itself: `restore` reads it back, including
`rearmed_at`, so a re-arm is sent once per silence even across restarts.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable
from typing import Any

from services.correlator import records
from services.correlator.effects import ActivityWrite, Effect, RepushCause, RepushJob
from services.correlator.enrollments import EnrollmentBook
from services.correlator.settings import CorrelatorSettings

ACTIVE, INACTIVE = 0, 1
_NAMES = ("ACTIVE", "INACTIVE")


def stable_hash(enrollment_id: str) -> int:
    """crc32 of the id: librdkafka's default partitioner for keyed records uses the same."""
    return zlib.crc32(enrollment_id.encode())


class Care:
    def __init__(self, settings: CorrelatorSettings, book: EnrollmentBook,
                 owns: Callable[[int], bool], tenant_of: Callable[[int], str]) -> None:
        self.s = settings
        self.book = book
        self._owns = owns
        self._tenant_of = tenant_of
        #: Per enrollment row: the state last written (by anyone) and when it was decided.
        self.state = array("b")
        self.state_at = array("q")
        #: Per enrollment row: when its last re-arm push was sent (0: never).
        self.rearmed_at = array("q")
        self.cursor = 0
        self._budget = 0.0
        self._budget_at = 0
        #: Rows whose written state is INACTIVE (this instance's enrollments).
        self.inactive = 0
        #: Re-arm pushes sent, and enrollments that contacted after theirs (this instance's).
        self.rearms = 0
        self.answered_after_rearm = 0

    def _row(self, enr: int) -> None:
        while len(self.state) <= enr:
            self.state.append(ACTIVE)
            self.state_at.append(0)
            self.rearmed_at.append(0)

    # -- what others wrote -------------------------------------------------------------------
    def restore(self, record: dict[str, Any]) -> None:
        """One EnrollmentActivity record read from the topic (start-up or live): the state it
        says, unless this instance decided something newer itself; re-arm times merge by max."""
        enr = self.book.index(record["enrollment_id"])
        self._row(enr)
        if record["last_contact_at"]:
            self.book.seen(enr, int(record["last_contact_at"]))
        if record.get("rearmed_at"):
            self.rearmed_at[enr] = max(self.rearmed_at[enr], int(record["rearmed_at"]))
        if int(record["at"]) >= self.state_at[enr]:
            self._set_state(enr, INACTIVE if record["state"] == "INACTIVE" else ACTIVE,
                            int(record["at"]))

    def _set_state(self, enr: int, state: int, at: int) -> None:
        self.inactive += (state == INACTIVE) - (self.state[enr] == INACTIVE)
        self.state[enr] = state
        self.state_at[enr] = at

    # -- contacts ----------------------------------------------------------------------------
    def contact(self, enr: int, previous_contact: int, at: int, now: int) -> list[Effect]:
        """The enrollment contacted at `at` (its last contact before: `previous_contact`)."""
        if enr >= len(self.state) or not self._owns(enr):
            return []
        if previous_contact < self.rearmed_at[enr] <= at:
            self.answered_after_rearm += 1
        if self.state[enr] == INACTIVE:
            return [self._write(enr, ACTIVE, now)]
        return []

    # -- the sweep ---------------------------------------------------------------------------
    def sweep(self, now: int) -> list[Effect]:
        """Look at the next `care_scan_rows` rows: re-arm, mark INACTIVE or ACTIVE as due."""
        rows = len(self.book.ids)
        if not rows or (self.s.rearm_after_ms <= 0 and self.s.inactive_after_ms <= 0):
            return []
        self._refill(now)
        out: list[Effect] = []
        for _ in range(min(self.s.care_scan_rows, rows)):
            enr = self.cursor % rows
            if not self._visit(enr, now, out):
                break  # rate budget spent: this row first next turn
            self.cursor = enr + 1
        return out

    def _refill(self, now: int) -> None:
        """A token bucket in simulated time: `rearm_per_minute`, at most a minute's worth."""
        full = max(1.0, self.s.rearm_per_minute)
        elapsed = now - self._budget_at if self._budget_at else 60_000
        self._budget = min(full, self._budget + elapsed * self.s.rearm_per_minute / 60_000)
        self._budget_at = now

    def _visit(self, enr: int, now: int, out: list[Effect]) -> bool:
        """Care for one row; False when a re-arm is due but the rate budget is spent."""
        last = self.book.last_contact(enr)
        if not last:
            return True
        self._row(enr)
        silent = now - last
        inactive = 0 < self.s.inactive_after_ms <= silent
        rearm = (0 < self.s.rearm_after_ms <= silent and self.rearmed_at[enr] <= last
                 and not inactive)
        # The usual row: recently heard from, nothing to write (checked without hashing).
        if not inactive and not rearm and self.state[enr] != INACTIVE:
            return True
        if not self._owns(enr) or self.book.facts(enr).checked_out:
            return True
        if inactive:
            if self.state[enr] != INACTIVE:
                out.append(self._write(enr, INACTIVE, now))
            return True
        if self.state[enr] == INACTIVE:  # contacted while another instance owned it
            out.append(self._write(enr, ACTIVE, now))
        if not rearm or now < last + self.s.rearm_after_ms + self.offset(enr):
            return True
        facts = self.book.facts(enr)
        if not (facts.topic and facts.token_hex and facts.push_magic):
            return True  # no trifecta known (its TokenUpdate predates the check-ins' retention)
        if self._budget < 1:
            return False
        self._budget -= 1
        self.rearmed_at[enr] = now
        self.rearms += 1
        out.append(RepushJob(records.rearm_job(self.book.ids.string(enr), self._tenant_of(enr),
                                               facts, last, now), RepushCause.REARM))
        out.append(self._write(enr, ACTIVE, now))
        return True

    def offset(self, enr: int) -> int:
        """This enrollment's place in the spread window (stable across restarts)."""
        spread = self.s.rearm_spread_ms
        return stable_hash(self.book.ids.string(enr)) % spread if spread > 0 else 0

    def _write(self, enr: int, state: int, now: int) -> ActivityWrite:
        self._set_state(enr, state, now)
        return ActivityWrite(records.activity(
            self.book.ids.string(enr), self._tenant_of(enr), _NAMES[state],
            self.book.last_contact(enr), now, self.rearmed_at[enr]))

    def state_name(self, enr: int) -> str:
        return _NAMES[self.state[enr]] if enr < len(self.state) else "ACTIVE"
