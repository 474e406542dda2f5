"""Repeated pushes after a SIGKILL, as a share of the run (bar: ≤ 1 % duplicate pushes, 0 lost,
in every run).

Usage: ``.venv/bin/python tests/bench/bench_sender_crash.py [--jobs N] [--kill-at F] [--runs R]
[--no-peer]``

N bulk jobs for two certificates in one partition; the sender (a process, default settings)
is SIGKILLed once F of them have outcomes, a second sender finishes the run. The simulator (in
this process) counts 200s per device token, so a repeated push is a second 200 for one token,
whether or not its first outcome reached Kafka. Bounded: each phase gives up after --limit-s.
Every one of the R runs is printed; the exit status is 1 if any missed the bar.

What bounds the figure: a crash repeats the jobs on the wire plus those answered and not yet
covered by an acknowledged commit, at most ``max_in_flight`` (1,000) by construction
(services/sender/offsets.py); of those, the next sender skips every job whose outcome Kafka had
acknowledged (services/sender/already_sent.py), so what remains is the requests on the wire and
the answers within one produce round trip of the kill — kept under the unrecorded window,
max(20, 1 % of the larger of the jobs outstanding and the pushes of the last minute)
(docs/bounds.md): at a kill at 50 % of N jobs both are about N / 2, so at most about
max(20, N / 200) repeated pushes by construction. The peer run of each round (unless
--no-peer) is the same crash with MDMPUSH_SENDER_SKIP_ALREADY_SENT=false: the commit-only
figure, in the same invocation.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Consumer, TopicPartition

from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from services.sender.commit_marks import decode_marks
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process
from tests.support.sender_harness import Reader, job, produce_jobs, sender_settings, start_sim

TERMINAL = {"SENT", "FAILED", "DEAD_LETTERED"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--kill-at", type=float, default=0.5)
    parser.add_argument("--limit-s", type=float, default=300.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="each run also crashes a sender that does not read the outcomes")
    args = parser.parse_args()
    results, peers = [], []
    for index in range(args.runs):
        if args.peer:  # alternating, so that the machine's load drifts over both alike
            print(f"-- run {index + 1}, peer (no outcome read):")
            peers.append(run(args, skip_already_sent=False))
        print(f"-- run {index + 1}:")
        results.append(run(args, skip_already_sent=True))
    print(f"{args.runs} runs: repeated pushes "
          + ", ".join(f"{share:.2%}" for _, share in results)
          + f"; lost {sum(lost for lost, _ in results)}"
          + (" (peer without the outcome read: "
             + ", ".join(f"{share:.2%}" for _, share in peers) + ")" if peers else ""))
    sys.exit(0 if all(met(lost, share) for lost, share in results) else 1)


def met(lost: int, share: float) -> bool:
    return lost == 0 and share <= 0.01


def run(args: argparse.Namespace, *, skip_already_sent: bool) -> tuple[int, float]:
    """One run: (jobs lost, repeated pushes as a share of the jobs)."""
    with bench_workspace("crash", certificates=2) as (directory, pki):
        kafka, topics = fresh_kafka()
        jobs = [job(pki.topics[i % 2], i) for i in range(args.jobs)]
        produce_jobs(kafka, topics.jobs_bulk, jobs, partition=0)
        outcomes = Reader(kafka, topics.outcomes)
        with start_sim(pki) as sim:
            settings = sender_settings(pki, sim.url, skip_already_sent=skip_already_sent)
            log = directory / "sender.log"
            with sender_process(settings, kafka, log, sig=signal.SIGKILL, timeout_s=10):
                deadline = time.monotonic() + args.limit_s
                while (len(outcomes.records) < args.jobs * args.kill_at
                       and time.monotonic() < deadline):
                    outcomes.poll(0.1)
            killed_at = len(outcomes.records)
            tail = uncommitted_tail(kafka, settings.group_id, topics.jobs_bulk, outcomes)
            with sender_process(settings, kafka, log):
                deadline = time.monotonic() + args.limit_s
                while time.monotonic() < deadline:
                    outcomes.poll(0.2)
                    done = {r["job_id"] for r in outcomes.records if r["state"] in TERMINAL}
                    if len(done) >= args.jobs:
                        break
            accepted = sim.snapshot().by_token
            log_text = log.read_text()
        outcomes.close()
    finished = Counter(r["job_id"] for r in outcomes.records if r["state"] in TERMINAL)
    lost = args.jobs - len(finished)
    if lost:
        print(f"the second sender had not finished after --limit-s {args.limit_s:.0f} s: "
              f"{lost:,} jobs without an outcome yet count as lost (a slow machine, or a loss)")
    repeated = sum(n - 1 for n in accepted.values())
    share = repeated / args.jobs
    committed, beyond, listed = tail
    read = re.findall(r"(\d+) jobs past the committed offsets have an outcome", log_text)
    print(f"at the kill: committed offset {committed:,}; {beyond:,} jobs finished beyond it, "
          f"{listed:,} of them listed as done in the commit metadata (not re-sent); the next "
          f"sender skipped {read[-1] if read else 'none (not read)'} more from their outcomes")
    print(f"{args.jobs:,} jobs, SIGKILL after {killed_at:,} outcomes: lost {lost}, repeated "
          f"pushes {repeated:,} ({share:.2%}), repeated terminal outcomes "
          f"{sum(n - 1 for n in finished.values()):,} (bar: 0 lost, <= 1 %: "
          f"{'met' if met(lost, share) else 'MISSED'})")
    return lost, share


def uncommitted_tail(kafka: KafkaSettings, group: str, topic: str, outcomes: Reader
                     ) -> tuple[int, int, int]:
    """The killed sender's committed offset, how many jobs at or past it had a terminal outcome
    acknowledged, and how many of those its commit metadata listed (the next sender skips
    them; see services/sender/commit_marks.py).

    Job n sits at offset n (one partition, produced in order, ids ``req/E<n>``)."""
    consumer = Consumer(kafka.consumer_config(group, **{"enable.auto.commit": False}),
                        logger=client_logger("bench-crash"))
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    committed = max(tp.offset, 0)
    outcomes.drain(quiet_s=1.0)
    finished = {int(r["job_id"].rsplit("/E", 1)[1]) for r in outcomes.records
                if r["state"] in TERMINAL}
    beyond = {n for n in finished if n >= committed}
    return committed, len(beyond), len(beyond & decode_marks(committed, tp.metadata))


if __name__ == "__main__":
    main()
