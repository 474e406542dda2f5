"""The correlator's recent job ids: RecentIds (services/correlator/recent.py) against the
OrderedDict it replaced, in the same run.

Run: .venv/bin/python tests/bench/bench_recent_ids.py [--capacity 100000] [--ops 100000]

Each structure is filled to capacity with job ids shaped like the pipeline's (`<uuid>/<enrollment
id>`) in a child process of its own, twice: once under tracemalloc (traced heap growth), once
without (RSS growth, free of tracemalloc's own bookkeeping). Then both, filled in this process,
are timed per operation in interleaved passes (best of 3): look up a held id, look up an id not
held, remember a new id evicting the oldest. The OrderedDict's remember is the correlator's old
`_remember` (set, move_to_end, pop the oldest past capacity).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.correlator.recent import RecentIds


class Recent(Protocol):
    def remember(self, job_id: str, tag: str | None = None) -> None: ...
    def __contains__(self, job_id: str) -> bool: ...


class OrderedRecent:
    """The replaced structure, exactly as core.py's `_remember` kept it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.jobs: OrderedDict[str, str | None] = OrderedDict()

    def remember(self, job_id: str, tag: str | None = None) -> None:
        self.jobs[job_id] = tag
        self.jobs.move_to_end(job_id)
        while len(self.jobs) > self.capacity:
            self.jobs.popitem(last=False)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs


#: Timed passes per operation; the fastest is reported.
REPEATS = 3
KINDS = ("OrderedDict", "RecentIds")


def job(n: int) -> str:
    return f"{uuid.UUID(int=n // 50 + (1 << 100))}/{n:08X}-{n * 2654435761 % (1 << 64):016X}"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def per_op_ns(call: Callable[[str], object], ids: list[str]) -> float:
    """Mean ns per call, once full (each remember of a new id evicts the oldest)."""
    started = time.perf_counter_ns()
    for i in ids:
        call(i)
    return (time.perf_counter_ns() - started) / len(ids)


def make(kind: str, capacity: int) -> Recent:
    return (RecentIds(capacity, ("DEAD_LETTERED", "FAILED")) if kind == "RecentIds"
            else OrderedRecent(capacity))


def memory(kind: str, capacity: int, traced: bool) -> dict[str, float]:
    """Runs in a fresh process: fill (each id made as a record would bring it, so the structure
    keeps it alive or lets it go) and measure the traced heap or the RSS it grew by."""
    gc.collect()
    rss_before = rss_kib()
    if traced:
        tracemalloc.start()
    recent = make(kind, capacity)
    for n in range(capacity):
        recent.remember(job(n))
    gc.collect()
    if not traced:
        return {"rss": (rss_kib() - rss_before) * 1024}
    return {"traced": tracemalloc.get_traced_memory()[0]}


def timing(capacity: int, ops: int) -> dict[str, dict[str, float]]:
    """Per-operation ns of both structures, filled, their passes interleaved (a neighbour's
    burst on the shared machine hits both alike); the fastest of REPEATS passes each."""
    full = {kind: make(kind, capacity) for kind in KINDS}
    for recent in full.values():
        for n in range(capacity):
            recent.remember(job(n))
    hits = [job(n) for n in range(max(0, capacity - ops), capacity)]
    misses = [job(n) for n in range(capacity, capacity + ops)]
    best: dict[str, dict[str, float]] = {k: {} for k in KINDS}
    for rep in range(REPEATS):
        fresh = [job(n) for n in range(capacity + (rep + 1) * ops, capacity + (rep + 2) * ops)]
        for kind, recent in full.items():
            passes = {"hit_ns": per_op_ns(recent.__contains__, hits),
                      "miss_ns": per_op_ns(recent.__contains__, misses),
                      "remember_ns": per_op_ns(recent.remember, fresh)}
            for op, ns in passes.items():
                best[kind][op] = min(ns, best[kind].get(op, ns))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory(args.child, args.capacity, args.traced)))
        return
    results: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        results[kind] = {}
        for traced in ((), ("--traced",)):
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--capacity",
                                  str(args.capacity), *traced],
                                 check=True, capture_output=True, text=True).stdout
            results[kind].update(json.loads(out))
    for kind, ns in timing(args.capacity, args.ops).items():
        results[kind].update(ns)
    print(f"recent job ids at capacity {args.capacity:,} (ids like {job(0)!r}), same run "
          f"(memory: each in a process of its own; time: interleaved, best of {REPEATS}):")
    for kind, r in results.items():
        print(f"  {kind:>11}: heap {r['traced'] / 2**20:6.2f} MiB "
              f"({r['traced'] / args.capacity:6.1f} B/id); "
              f"RSS growth {r['rss'] / 2**20:6.2f} MiB; per op: remember {r['remember_ns']:5.0f} "
              f"ns, hit {r['hit_ns']:4.0f} ns, miss {r['miss_ns']:4.0f} ns")
    old, new = results["OrderedDict"], results["RecentIds"]
    print(f"  ratio RecentIds/OrderedDict: heap "
          f"{new['traced'] / old['traced']:.3f}, "
          f"remember {new['remember_ns'] / old['remember_ns']:.2f}x, "
          f"hit {new['hit_ns'] / old['hit_ns']:.2f}x, miss {new['miss_ns'] / old['miss_ns']:.2f}x")


if __name__ == "__main__":
    main()
