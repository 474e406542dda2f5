"""Retry-tier lateness: how long after its `mdmpush.not_before` a retried job is sent again.

Usage: ``.venv/bin/python tests/bench/bench_retry.py [--jobs N] [--rate R]``

The simulator answers 503 to a share of the requests, so the sender itself puts jobs on the
retry tiers (200 ms, 500 ms, 1 s); fresh jobs are produced at --rate per second while the
sender runs (no throttle: lateness here is the scheduler's, not a bucket's), so retries keep
arriving while tiers are paused. Each retry record's due time (header) is joined
with the next attempt's outcome; the send time is the outcome's `at` minus its APNs latency.
Prints p50 / p99 / max lateness and the earliest (never early: >= 0). Bar: p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sim.apns.faults import Faults
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process
from tests.support.sender_harness import (
    Reader,
    create_retry_topics,
    job,
    not_before_of,
    produce_jobs,
    sender_settings,
    start_sim,
)

DELAYS_MS = (200, 500, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    parser.add_argument("--share-503", type=float, default=0.5)
    args = parser.parse_args()
    with bench_workspace("retry", certificates=1) as (directory, pki):
        kafka, topics = fresh_kafka()
        create_retry_topics(kafka, DELAYS_MS)
        with start_sim(pki, faults=Faults(share_503=args.share_503, seed=3)) as sim:
            settings = sender_settings(pki, sim.url, retry_delays_ms=DELAYS_MS,
                                       default_max_attempts=20)
            with sender_process(settings, kafka, directory / "sender.log"):
                outcomes = Reader(kafka, topics.outcomes)
                limit = time.monotonic() + args.jobs / args.rate + 60
                step = max(1, int(args.rate / 10))
                for first in range(0, args.jobs, step):
                    batch = range(first, min(args.jobs, first + step))
                    produce_jobs(kafka, topics.jobs_bulk, (job(pki.topics[0], i) for i in batch))
                    time.sleep(step / args.rate)
                while time.monotonic() < limit:
                    outcomes.poll(0.2)
                    done = {r["job_id"] for r in outcomes.records if r["state"] == "SENT"}
                    if len(done) >= args.jobs:
                        break
        outcomes.drain()
        due: dict[tuple[str, int], int] = {}
        for delay in DELAYS_MS:
            reader = Reader(kafka, topics.retry(delay))
            for record in reader.drain():
                due[(record["job_id"], record["attempt"])] = not_before_of(record)
            reader.close()
        lateness = sorted(
            r["at"] - r["latency_ms"] - due[(r["job_id"], r["attempt"])]
            for r in outcomes.records
            if r["attempt"] >= 1 and (r["job_id"], r["attempt"]) in due
        )
        outcomes.close()
        if not lateness:
            sys.exit("no retried sends measured")
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))]
        print(f"tiers {DELAYS_MS} ms, {len(lateness)} retried sends: lateness "
              f"p50 {statistics.median(lateness):.1f} ms, p99 {p99:.1f} ms, "
              f"max {lateness[-1]:.1f} ms, min {lateness[0]:.1f} ms "
              f"(never early: {'yes' if lateness[0] >= 0 else 'NO'}; "
              f"bar p99 <= 200 ms: {'met' if p99 <= 200 else 'MISSED'})")


if __name__ == "__main__":
    main()
