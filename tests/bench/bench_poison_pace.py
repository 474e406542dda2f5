"""Does the sender keep its pace when 1 % of what it reads is semantic poison?

Usage: ``.venv/bin/python tests/bench/bench_poison_pace.py [--jobs N] [--limit-s S]``
(broker: ``MDMPUSH_TEST_BOOTSTRAP``, default 127.0.0.1:9092).

One APNs simulator process; against it, one after another in this invocation, a sender process
over N pre-produced bulk jobs, alternating 0 % and 1 % poison (every 100th job schema-valid but
wrong: a non-hex token, a topic that is not one, an empty or a 50 KB job id, a creation time in
the past or far future, a far-future expiration), 0/1/0/1/0 so that each poisoned run has clean
peers on both sides on a machine whose load drifts; the ratio is of the medians. The rate is
outcomes per second from the outcome records' Kafka timestamps (first to last), so start-up is
excluded; a run that did not get all N outcomes within ``--limit-s`` is MISSED, never a rate.
Bar: the 1 % median at least 0.9x the 0 % median. A far-future ``mdmpush.not_before`` and
attempts out of range only act on retry tiers and failing pushes, which this run does not have:
tests/fuzz/test_semantic_poison_sender.py checks them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

# Run as a script (python tests/bench/bench_poison_pace.py): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process, sim_process
from tests.support.sender_harness import SERDE, Pki, Reader, job, produce_jobs, sender_settings

YEAR_3000_MS = 32_503_680_000_000
TERMINAL = {"SENT", "FAILED", "DEAD_LETTERED"}


def poison_job(cert: str, n: int) -> dict[str, Any]:
    kinds: list[dict[str, Any]] = [
        {"token_hex": "zz" * 32},
        {"topic": "not a topic"},
        {"job_id": ""},
        {"job_id": "J" * 50_000},
        {"created_at": -1, "token_updated_at": -1},
        {"created_at": YEAR_3000_MS, "expiration": YEAR_3000_MS},
    ]
    record = job(cert, n)
    record.update(kinds[(n // 100) % len(kinds)])
    return record


def jobs(cert: str, count: int, poison_every: int | None) -> Iterator[dict[str, Any]]:
    for n in range(count):
        if poison_every and n % poison_every == poison_every - 1:
            yield poison_job(cert, n)
        else:
            yield job(cert, n)


def run(pki: Pki, url: str, directory: Path, count: int, poison_every: int | None,
        limit_s: float) -> tuple[float | None, Counter[str]]:
    """(outcomes/s or None when MISSED, terminal states) of one sender over `count` jobs."""
    kafka, topics = fresh_kafka()
    produce_jobs(kafka, topics.jobs_bulk, jobs(pki.topics[0], count, poison_every))
    settings = sender_settings(pki, url)
    with closing(Reader(kafka, topics.outcomes, decode=False)) as reader, \
            sender_process(settings, kafka, directory / f"sender-{poison_every}.log"):
        deadline = time.monotonic() + limit_s
        while len(reader.records) < count and time.monotonic() < deadline:
            reader.poll(0.2)
    states = Counter(SERDE.decode(m.value())[1]["state"] for m in reader.records)
    stamps = sorted(m.timestamp()[1] for m in reader.records)
    if sum(states[s] for s in TERMINAL) < count or stamps[-1] <= stamps[0]:
        return None, states
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000), states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8_000)
    parser.add_argument("--limit-s", type=float, default=120.0)
    args = parser.parse_args()
    with bench_workspace("poison-pace", 1) as (directory, pki), \
            sim_process(pki, directory) as port:
        url = f"https://127.0.0.1:{port}"
        rates: dict[str, list[float | None]] = {"0 %": [], "1 %": []}
        for every in [None, 100, None, 100, None]:
            name = "1 %" if every else "0 %"
            rate, states = run(pki, url, directory, args.jobs, every, args.limit_s)
            rates[name].append(rate)
            shown = f"{rate:,.0f} outcomes/s" if rate is not None else "MISSED (not all outcomes)"
            print(f"{name} poison, {args.jobs} jobs: {shown}  {dict(states)}", flush=True)
    if any(r is None for runs in rates.values() for r in runs):
        print("ratio: MISSED (a run did not finish)")
        return 1
    clean = statistics.median(r for r in rates["0 %"] if r is not None)
    poisoned = statistics.median(r for r in rates["1 %"] if r is not None)
    ratio = poisoned / clean
    met = ratio >= 0.9
    print(f"median 0 %: {clean:,.0f}/s, median 1 %: {poisoned:,.0f}/s, ratio {ratio:.2f}x "
          f"(bar >= 0.90x): {'MET' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
