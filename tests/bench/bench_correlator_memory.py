"""Correlator memory bar (<= 200 bytes per pending push) at 1,000,000 pending.

Run: `.venv/bin/python tests/bench/bench_correlator_memory.py [count]`. Inserts `count` SENT-
outcome pushes (distinct enrollments, 64-hex tokens, UUID PushMagic and apns-id, 10,000 targets
per request, each with its timer armed) into the correlator's PendingStore and reports the
traced heap growth per push, twice: with the enrollment ids already known (the enrollment book
holds them whether or not a push is pending: that is the bar), and with their interning counted.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
import uuid

from services.correlator.packed import Interner
from services.correlator.pending import LANE_BULK, PENDING, Entry, PendingStore

T = 1_795_000_000_000


def enrollment(i: int) -> str:
    return f"{i:08X}-{i * 2654435761 % (1 << 64):016X}"


def fill(store: PendingStore, count: int) -> None:
    for i in range(count):
        e = Entry(PENDING, enrollment(i), f"req-{i // 10_000}", "acme",
                  "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001",
                  uuid.UUID(int=i).hex * 2, str(uuid.UUID(int=i + 7)).upper(),
                  str(uuid.UUID(int=i + 13)), T + i, T - 86_400_000, LANE_BULK, 0)
        slot = store.add(e, i % 12)
        store.arm(slot, e.pushed_at + 10_000)


def measure(count: int, known_enrollments: bool) -> float:
    enrollments = Interner()
    if known_enrollments:
        for i in range(count):
            enrollments.intern(enrollment(i))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    store = PendingStore(enrollments, Interner(), tick_ms=100)
    fill(store, count)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(store) == count
    return (after - before) / count


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    bar = measure(count, known_enrollments=True)
    total = measure(count, known_enrollments=False)
    print(f"pending pushes: {count:,}")
    print(f"bytes per pending push (enrollments known): {bar:.1f}  (bar: <= 200)")
    print(f"bytes per pending push incl. enrollment-id interning: {total:.1f}")
    sys.exit(0 if bar <= 200 else 1)


if __name__ == "__main__":
    main()
