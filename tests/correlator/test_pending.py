"""The packed store: exact round trips, per-enrollment lists, the timer wheel, the changelog."""

from __future__ import annotations

import pytest

from services.correlator import changelog
from services.correlator.packed import FixedText, Interner
from services.correlator.pending import (
    LANE_PRIORITY,
    NEW_TOKEN,
    PENDING,
    SCHEDULED,
    WINDOW_DONE,
    Entry,
    PendingStore,
    parse_job_id,
)

T = 1_795_000_000_000


def entry(enrollment: str = "E1", request: str = "req-1", **kw: object) -> Entry:
    base: dict[str, object] = dict(
        kind=PENDING, enrollment_id=enrollment, request_id=request, tenant="acme",
        topic="com.apple.mgmt.A", token_hex="ab" * 32,
        push_magic="0F6C5A3A-1B2C-4D5E-8F90-A1B2C3D4E5F6",
        apns_id="8a3f1c2e-0000-4000-8000-000000000001", pushed_at=T, token_updated_at=T - 1,
        flags=LANE_PRIORITY, repush=0,
    )
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]


def store() -> PendingStore:
    return PendingStore(Interner(), Interner(), tick_ms=100)


@pytest.mark.parametrize("text", [
    None, "ab" * 32, "AB" * 32, "0f6c5a3a-1b2c-4d5e-8f90-a1b2c3d4e5f6",
    "0F6C5A3A-1B2C-4D5E-8F90-A1B2C3D4E5F6", "magic-1", "Ab" * 32, "",
])
def test_fixed_text_is_exact(text: str | None) -> None:
    for width in (16, 32):
        col = FixedText(width)
        col.append_empty()
        col.set(0, text)
        assert col.get(0) == text


def test_entries_round_trip_through_store_and_changelog() -> None:
    s = store()
    e = entry(apns_id=None, token_updated_at=None, repushed_at=T + 5)
    slot = s.add(e, partition=1)
    assert s.entry(slot) == e
    assert changelog.decode(changelog.encode(e)) == e
    assert s.partition_of(slot) == 1 and len(s) == 1


def test_slots_of_an_enrollment_and_free_reuses_slots_and_ids() -> None:
    s = store()
    a = s.add(entry(), 0)
    b = s.add(entry(request="req-2"), 0)
    c = s.add(entry(enrollment="E2"), 0)
    assert sorted(s.slots_of(s.enrollments.get("E1") or 0)) == sorted([a, b])
    assert s.find("E1", "req-2", PENDING, 0) == b
    assert s.find("E1", "req-2", SCHEDULED, 0) is None
    s.free(b)
    assert s.find("E1", "req-2", PENDING, 0) is None
    assert s.requests.get("req-2") is None  # released with its last push
    assert s.add(entry(request="req-3"), 0) == b
    assert s.slots_of(s.enrollments.get("E2") or 0) == [c]


def test_timer_wheel_fires_once_when_due_and_skips_stale_entries() -> None:
    s = store()
    a = s.add(entry(), 0)
    b = s.add(entry(request="req-2"), 0)
    s.arm(a, T + 1_000)
    s.arm(b, T + 1_050)
    s.arm(b, T + 5_000)  # re-armed: the first entry is stale
    assert s.pop_due(T + 998) == []
    assert s.pop_due(T + 1_099) == [a]
    assert s.pop_due(T + 1_099) == []
    s.free(a)
    assert s.pop_due(T + 5_099) == [b]


def test_job_ids_parse() -> None:
    assert parse_job_id("req-1/E1") == ("req-1", "E1", 0)
    assert parse_job_id("r/x/UDID:user#r2") == ("r/x", "UDID:user", 2)
    assert parse_job_id("nonsense") is None
    assert entry(repush=2, kind=SCHEDULED).job_id == "req-1/E1#r2"


def test_partition_scans_flags_and_repushes() -> None:
    s = store()
    a = s.add(entry(), 0)
    b = s.add(entry(request="req-2"), 1)
    c = s.add(entry(request="req-3", kind=SCHEDULED, repush=1), 1)
    assert s.awaiting_in(1) == [b] and s.is_scheduled(c) and s.is_pending(a)
    s.record_repush(a, T + 10, NEW_TOKEN)
    s.mark(a, WINDOW_DONE)
    assert s.has_flag(a, NEW_TOKEN) and s.has_flag(a, WINDOW_DONE) and not s.has_flag(b, NEW_TOKEN)
    assert s.entry(a).repushed_at == T + 10
    assert s.free_partitions({1}) == 2
    assert len(s) == 1 and s.awaiting_in(1) == [] and s.awaiting_in(0) == [a]
