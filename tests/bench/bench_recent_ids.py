"""The correlator's recent job ids: RecentIds (services/correlator/recent.py) against the
OrderedDict it replaced, in the same run.

Run: .venv/bin/python tests/bench/bench_recent_ids.py [--capacity 100000] [--ops 100000]

Each structure is filled to capacity with job ids shaped like the pipeline's (`<uuid>/<enrollment
id>`) in a child process of its own, twice: once under tracemalloc (traced heap growth, then the
per-operation cost once full: look up a held id, look up an id not held, remember a new id
evicting the oldest), once without (RSS growth, free of tracemalloc's own bookkeeping). The
OrderedDict's remember is the correlator's old `_remember` (set, move_to_end, pop the oldest past
capacity).
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


def child(kind: str, capacity: int, ops: int, traced: bool) -> dict[str, float]:
    """Runs in a fresh process: fill (each id made as a record would bring it, so the structure
    keeps it alive or lets it go) and measure memory; when traced, then time operations."""
    gc.collect()
    rss_before = rss_kib()
    if traced:
        tracemalloc.start()
    recent: Recent = (RecentIds(capacity, ("DEAD_LETTERED", "FAILED")) if kind == "RecentIds"
                      else OrderedRecent(capacity))
    for n in range(capacity):
        recent.remember(job(n))
    gc.collect()
    if not traced:
        return {"rss": (rss_kib() - rss_before) * 1024}
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    hits = [job(n) for n in range(max(0, capacity - ops), capacity)]
    misses = [job(n) for n in range(capacity, capacity + ops)]
    fresh = [job(n) for n in range(capacity + ops, capacity + 2 * ops)]
    return {"traced": heap, "hit_ns": per_op_ns(recent.__contains__, hits),
            "miss_ns": per_op_ns(recent.__contains__, misses),
            "remember_ns": per_op_ns(recent.remember, fresh)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--child", choices=("RecentIds", "OrderedDict"), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.capacity, args.ops, args.traced)))
        return
    results: dict[str, dict[str, float]] = {}
    for kind in ("OrderedDict", "RecentIds"):
        results[kind] = {}
        for traced in ((), ("--traced",)):
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--capacity",
                                  str(args.capacity), "--ops", str(args.ops), *traced],
                                 check=True, capture_output=True, text=True).stdout
            results[kind].update(json.loads(out))
    print(f"recent job ids at capacity {args.capacity:,} (ids like {job(0)!r}), each in its "
          f"own process, same run:")
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
