"""The pending pushes, packed: parallel arrays indexed by a slot number, ~130 bytes a push.

A slot is either a PENDING push (a SENT outcome waiting for contact, its race re-push or its
deadline) or a SCHEDULED push (a self-healing push to send at a later time). Slots of one
enrollment form a linked list (`next`) headed in `head[enrollment]`, so a contact finds its
pushes without a dict keyed by job id. Timers are a wheel: one `array('I')` of slots per tick
and a heap of ticks, 4 bytes per armed timer instead of a tuple in a heap; a freed or re-armed
slot leaves a stale entry that is recognised (its `due_at` no longer falls in that tick) and
skipped.
"""

from __future__ import annotations

import heapq
from array import array
from dataclasses import dataclass

from services.correlator.packed import FixedText, Interner

#: RIDER: a request coalesced onto another job's push (a SKIPPED "coalesced" outcome); it waits
#: for that carrier's verdict, or judges itself as a push sent at its own time.
FREE, PENDING, SCHEDULED, RIDER = 0, 1, 2, 3
# Flag bits.
#: WINDOW_DONE: the race-window check ran (`repushed_at` is the first re-push's time, of either
#: cause); RACE: it found the push within seconds of enrollment; NEW_TOKEN: a TokenUpdate with
#: another token arrived after the push, which was re-pushed to the new token.
LANE_PRIORITY, LANE_BULK, WINDOW_DONE, RACE, NEW_TOKEN = 1, 2, 4, 8, 16
NO_ID = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Entry:
    """One slot, unpacked: what the changelog stores and restore feeds back."""

    kind: int
    enrollment_id: str
    request_id: str
    tenant: str
    topic: str | None
    token_hex: str | None
    push_magic: str | None
    apns_id: str | None
    pushed_at: int
    token_updated_at: int | None
    flags: int
    repush: int
    due_at: int = 0
    repushed_at: int = 0
    #: A RIDER's carrier: the request id of the job it rides on (same enrollment).
    rides_on: str | None = None

    @property
    def job_id(self) -> str:
        return job_id(self.request_id, self.enrollment_id, self.repush)

    @property
    def lane(self) -> str | None:
        if self.flags & LANE_PRIORITY:
            return "PRIORITY"
        return "BULK" if self.flags & LANE_BULK else None


def job_id(request_id: str, enrollment_id: str, repush: int = 0) -> str:
    """CONTRACTS.md: `request/enrollment`, and `#r<n>` for the correlator's n-th re-push."""
    base = f"{request_id}/{enrollment_id}"
    return f"{base}#r{repush}" if repush else base


def parse_job_id(job: str) -> tuple[str, str, int] | None:
    """(request id, enrollment id, repush) of a job id; enrollment ids hold no '/'."""
    base, sep, n = job.partition("#r")
    request_id, slash, enrollment_id = base.rpartition("/")
    if not slash or (sep and not n.isdigit()):
        return None
    return request_id, enrollment_id, int(n) if sep else 0


def lane_flag(lane: str | None) -> int:
    return {"PRIORITY": LANE_PRIORITY, "BULK": LANE_BULK}.get(lane or "", 0)


class PendingStore:
    def __init__(self, enrollments: Interner, topics: Interner, tick_ms: int = 100) -> None:
        self.enrollments = enrollments
        self.topics = topics
        self.requests = Interner(counted=True)
        self.tenants = Interner(counted=True)
        self.tick_ms = max(1, tick_ms)
        self.kind = array("B")
        self.flags = array("B")
        self.repush = array("B")
        self.partition = array("H")
        self.enr = array("I")
        self.req = array("I")
        self.tenant = array("I")
        self.topic = array("I")
        self.pushed_at = array("q")
        self.token_updated_at = array("q")
        self.due_at = array("q")
        self.repushed_at = array("q")
        self.carrier = array("I")
        self.next = array("i")
        self.token = FixedText(32)
        self.magic = FixedText(16)
        self.apns_id = FixedText(16)
        self.head = array("i")
        self._free = array("I")
        self._live = 0
        self._buckets: dict[int, array[int]] = {}
        self._ticks: list[int] = []

    def __len__(self) -> int:
        return self._live

    # -- rows --------------------------------------------------------------------------------
    def add(self, e: Entry, partition: int) -> int:
        """Store `e` in a free slot, link it to its enrollment; returns the slot."""
        slot = self._free.pop() if self._free else self._grow()
        enr = self.enrollments.intern(e.enrollment_id)
        self.kind[slot] = e.kind
        self.flags[slot] = e.flags
        self.repush[slot] = e.repush
        self.partition[slot] = partition
        self.enr[slot] = enr
        self.req[slot] = self.requests.intern(e.request_id)
        self.tenant[slot] = self.tenants.intern(e.tenant)
        self.topic[slot] = NO_ID if e.topic is None else self.topics.intern(e.topic)
        self.pushed_at[slot] = e.pushed_at
        self.token_updated_at[slot] = -1 if e.token_updated_at is None else e.token_updated_at
        self.due_at[slot] = e.due_at
        self.repushed_at[slot] = e.repushed_at
        self.carrier[slot] = NO_ID if e.rides_on is None else self.requests.intern(e.rides_on)
        self.token.set(slot, e.token_hex)
        self.magic.set(slot, e.push_magic)
        self.apns_id.set(slot, e.apns_id)
        while len(self.head) <= enr:
            self.head.append(-1)
        self.next[slot] = self.head[enr]
        self.head[enr] = slot
        self._live += 1
        return slot

    def _grow(self) -> int:
        for col in (self.kind, self.flags, self.repush, self.partition):
            col.append(0)
        for col in (self.enr, self.req, self.tenant, self.topic, self.carrier):
            col.append(0)
        for col in (self.pushed_at, self.token_updated_at, self.due_at, self.repushed_at):
            col.append(0)
        self.next.append(-1)
        for text in (self.token, self.magic, self.apns_id):
            text.append_empty()
        return len(self.kind) - 1

    def free(self, slot: int) -> None:
        """Drop the push: unlink it, release its strings, make the slot reusable."""
        enr = self.enr[slot]
        prev, cur = -1, self.head[enr]
        while cur != slot:
            prev, cur = cur, self.next[cur]
        if prev < 0:
            self.head[enr] = self.next[slot]
        else:
            self.next[prev] = self.next[slot]
        self.requests.release(self.req[slot])
        if self.carrier[slot] != NO_ID:
            self.requests.release(self.carrier[slot])
            self.carrier[slot] = NO_ID
        self.tenants.release(self.tenant[slot])
        for text in (self.token, self.magic, self.apns_id):
            text.set(slot, None)
        self.kind[slot] = FREE
        self._free.append(slot)
        self._live -= 1

    def entry(self, slot: int) -> Entry:
        """The slot unpacked (what the changelog stores and the records are built from)."""
        tua = self.token_updated_at[slot]
        topic = self.topic[slot]
        return Entry(
            kind=self.kind[slot],
            enrollment_id=self.enrollments.string(self.enr[slot]),
            request_id=self.requests.string(self.req[slot]),
            tenant=self.tenants.string(self.tenant[slot]),
            topic=None if topic == NO_ID else self.topics.string(topic),
            token_hex=self.token.get(slot),
            push_magic=self.magic.get(slot),
            apns_id=self.apns_id.get(slot),
            pushed_at=self.pushed_at[slot],
            token_updated_at=None if tua < 0 else tua,
            flags=self.flags[slot],
            repush=self.repush[slot],
            due_at=self.due_at[slot],
            repushed_at=self.repushed_at[slot],
            rides_on=self.carrier_of(slot),
        )

    # -- what callers ask of a slot (the columns stay private to this module's layout) --------
    def is_free(self, slot: int) -> bool:
        """Freed (e.g. a rider closed by its carrier's verdict earlier in the same loop)."""
        return self.kind[slot] == FREE

    def is_pending(self, slot: int) -> bool:
        """A SENT push waiting for contact, its race re-push or its deadline."""
        return self.kind[slot] == PENDING

    def is_scheduled(self, slot: int) -> bool:
        """A self-healing push waiting for its time."""
        return self.kind[slot] == SCHEDULED

    def is_rider(self, slot: int) -> bool:
        """A coalesced request waiting for its carrier's verdict (or its own deadline)."""
        return self.kind[slot] == RIDER

    def carrier_of(self, slot: int) -> str | None:
        """A rider's carrier request id."""
        carrier = self.carrier[slot]
        return None if carrier == NO_ID else self.requests.string(carrier)

    def partition_of(self, slot: int) -> int:
        """The outcomes (and state) partition the push belongs to."""
        return self.partition[slot]

    def enrollment_of(self, slot: int) -> int:
        """The interned enrollment id (the enrollment book's row)."""
        return self.enr[slot]

    def pushed_at_of(self, slot: int) -> int:
        return self.pushed_at[slot]

    def due_at_of(self, slot: int) -> int:
        """When the slot's timer fires (a scheduled push: when it is sent)."""
        return self.due_at[slot]

    def has_flag(self, slot: int, flag: int) -> bool:
        return bool(self.flags[slot] & flag)

    def mark(self, slot: int, flags: int) -> None:
        """Set flag bits (e.g. WINDOW_DONE once the race-window check ran)."""
        self.flags[slot] |= flags

    def record_repush(self, slot: int, at: int, flags: int) -> None:
        """The push was re-pushed at `at`, for the reason the flag bits say. `repushed_at` keeps
        the first re-push's time: an answer is named after the re-push it came after, and a
        race-window re-push of the old trifecta after the re-push to a restored device's new
        token must not hide that the new token was answered before it was read."""
        self.flags[slot] |= flags
        if not self.repushed_at[slot]:
            self.repushed_at[slot] = at

    def awaiting_in(self, partition: int) -> list[int]:
        """PENDING and RIDER slots of one partition (a full scan: when its gate opens)."""
        return [s for s in range(len(self.kind))
                if self.kind[s] in (PENDING, RIDER) and self.partition[s] == partition]

    def free_partitions(self, partitions: set[int]) -> int:
        """Forget every push of partitions this instance no longer owns; returns how many."""
        lost = [s for s in range(len(self.kind))
                if self.kind[s] != FREE and self.partition[s] in partitions]
        for slot in lost:
            self.free(slot)
        return len(lost)

    def slots_of(self, enrollment: int) -> list[int]:
        """Live slots of one enrollment (usually zero or one)."""
        out: list[int] = []
        cur = self.head[enrollment] if enrollment < len(self.head) else -1
        while cur >= 0:
            out.append(cur)
            cur = self.next[cur]
        return out

    def find(self, enrollment_id: str, request_id: str, kind: int, repush: int) -> int | None:
        """The slot of one push (by its job id's parts and kind), if held."""
        enr, req = self.enrollments.get(enrollment_id), self.requests.get(request_id)
        if enr is None or req is None:
            return None
        for slot in self.slots_of(enr):
            if self.req[slot] == req and self.kind[slot] == kind and self.repush[slot] == repush:
                return slot
        return None

    # -- timers ------------------------------------------------------------------------------
    def arm(self, slot: int, due_ms: int) -> None:
        """Fire `slot` once the clock reaches `due_ms` (at most one tick late)."""
        self.due_at[slot] = due_ms
        tick = due_ms // self.tick_ms
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = array("I")
            heapq.heappush(self._ticks, tick)
        bucket.append(slot)

    def pop_due(self, now_ms: int) -> list[int]:
        """Slots whose timer is due, each once; the caller re-arms or frees them."""
        due: list[int] = []
        seen: set[int] = set()
        while self._ticks and (self._ticks[0] + 1) * self.tick_ms - 1 <= now_ms:
            tick = heapq.heappop(self._ticks)
            for slot in self._buckets.pop(tick):
                if (
                    slot not in seen
                    and self.kind[slot] != FREE
                    and self.due_at[slot] // self.tick_ms == tick
                ):
                    seen.add(slot)
                    due.append(slot)
        return due
