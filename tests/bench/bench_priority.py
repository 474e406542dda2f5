"""Priority push latency behind a 100,000-job bulk backlog.

Usage: ``.venv/bin/python tests/bench/bench_priority.py [--backlog N] [--priority N]``

The bulk lane holds --backlog pre-produced jobs (unthrottled by default: the sender is as busy
as it can be, the worst case for the priority lane); once the sender is draining it, priority
jobs are produced one at a time at 20/s. Latency = the priority outcome's `at` - the job's
creation stamp, taken just before it was produced (Kafka in, APNs answer, outcome built).
The simulator runs in its own process. Bar: p99 <= 500 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.kafka.producer import ReliableProducer
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process, sim_process
from tests.support.sender_harness import SERDE, Reader, job, produce_jobs, sender_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--priority", type=int, default=200)
    parser.add_argument("--bulk-per-minute", type=float, default=0.0)
    args = parser.parse_args()
    with bench_workspace("priority", certificates=1) as (directory, pki):
        topic = pki.topics[0]
        kafka, topics = fresh_kafka()
        produce_jobs(kafka, topics.jobs_bulk, (job(topic, i) for i in range(args.backlog)))
        with sim_process(pki, directory) as port:
            outcomes = Reader(kafka, topics.outcomes)
            settings = sender_settings(pki, f"https://127.0.0.1:{port}",
                                       default_bulk_per_minute=args.bulk_per_minute)
            with sender_process(settings, kafka, directory / "sender.log"):
                while not outcomes.records:  # the sender is draining the backlog
                    outcomes.poll(0.2)
                producer = ReliableProducer(kafka, name="bench-priority", **{"linger.ms": 0})
                # Connect and get a producer id first, as the fan-out's long-lived producer has:
                # otherwise the first priority jobs wait ~0.5 s for it, and that was the whole p99.
                producer.produce_sync(topics.dlq, b"warm-up")
                for n in range(args.priority):
                    record = job(topic, 1_000_000 + n, lane="PRIORITY", request="prio")
                    producer.produce(topics.jobs_priority, SERDE.encode("PushJob", record),
                                     key=topic)
                    producer.poll(0)
                    time.sleep(0.05)
                producer.close()  # flushes: raises if a priority job was not acknowledged
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    outcomes.poll(0.2)
                    if sum(r["request_id"] == "prio" for r in outcomes.records) >= args.priority:
                        break
                bulk_done = sum(r["request_id"] == "req" for r in outcomes.records)
        outcomes.close()
    prio = [r for r in outcomes.records if r["request_id"] == "prio" and r["state"] == "SENT"]
    if not prio:
        sys.exit("no priority outcome")
    # Outcomes carry token_updated_at, which job() stamps with the creation time.
    latency = sorted(r["at"] - r["token_updated_at"] for r in prio)
    p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))]
    # Of which on the wire: submit to APNs answer, as the sender measured it.
    wire = sorted(r["latency_ms"] for r in prio)
    wire_p99 = wire[min(len(wire) - 1, int(len(wire) * 0.99))]
    print(f"bulk backlog {args.backlog:,} (bulk {args.bulk_per_minute or 'unthrottled'}/min; "
          f"{bulk_done:,} bulk sent meanwhile); {len(prio)} priority pushes: latency "
          f"p50 {statistics.median(latency):.0f} ms, p99 {p99:.0f} ms, max {latency[-1]:.0f} ms "
          f"(bar p99 <= 500 ms: {'met' if p99 <= 500 else 'MISSED'}); of which APNs request: "
          f"p50 {statistics.median(wire):.0f} ms, p99 {wire_p99:.0f} ms")


if __name__ == "__main__":
    main()
