"""Retry-tier lateness measured at the simulator: how long after "failure answered + the tier's
delay" the retried push arrives.

Usage: ``.venv/bin/python tests/bench/bench_retry.py [--jobs N] [--rate R]``

The simulator answers 503 to a share of the requests, so the sender itself puts jobs on the
retry tiers (200 ms, 500 ms, 1 s); fresh jobs are produced at --rate per second while the
sender runs (no throttle: lateness here is the scheduler's, not a bucket's), so retries keep
arriving while tiers are paused.

Every time comes from the simulator (one clock, outside the sender): it records, per device
token (one per job), when each request arrived and what it was answered (no latency is
injected, so a 503 is answered as it arrives). For each 503 the tier is the one of the retry
record the sender wrote for that job next (the first on any tier created at or after the 503),
and lateness = next arrival - (503 answered + tier delay). "Never early" holds when no lateness
is negative. The sender's own view (its outcome stamps against its own due header, the method
this replaces) is printed beside it. Bar: p99 <= 200 ms and never early.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sim.apns.connection import Answer, Headers, PeerIdentity
from services.sim.apns.faults import FaultDecision, Faults
from services.sim.apns.server import ApnsSimulator, SimulatorConfig
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process
from tests.support.sender_harness import (
    Reader,
    create_retry_topics,
    job,
    not_before_of,
    produce_jobs,
    sender_settings,
)

DELAYS_MS = (200, 500, 1000)


def token_of(headers: Headers) -> str:
    path = next(v for k, v in headers if k == b":path")
    return path.rsplit(b"/", 1)[-1].decode().lower()


class AnswerLog(ApnsSimulator):
    """The simulator, noting (epoch s, token, status) of every answer it decides (on its loop
    thread; an injected latency would make the answer later, and none is injected here)."""

    def __init__(self, config: SimulatorConfig, gateway: None = None,
                 faults: Faults | None = None) -> None:
        super().__init__(config, gateway, faults)
        self.answers: list[tuple[float, str, int]] = []

    def fault_answer(self, headers: Headers, fault: FaultDecision) -> Answer:
        answer = super().fault_answer(headers, fault)
        self.answers.append((time.time(), token_of(headers), int(answer[0])))
        return answer

    def answer(self, peer: PeerIdentity, headers: Headers, body: bytes) -> Answer:
        answer = super().answer(peer, headers, body)
        self.answers.append((time.time(), token_of(headers), int(answer[0])))
        return answer


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))]


def lateness_at_simulator(answers: list[tuple[float, str, int]], token_to_job: dict[str, str],
                          retries: list[tuple[str, float, int, int]]
                          ) -> tuple[list[float], list[float]]:
    """ms between each retried push's arrival and (its 503's answer + its tier's delay); and
    ms between the due time the sender wrote and that same (answer + delay), which says where
    an early push comes from (a due time set early, or a send before the due time)."""
    by_job: dict[str, list[tuple[float, int]]] = {}
    for at, token, status in answers:
        if token in token_to_job:
            by_job.setdefault(token_to_job[token], []).append((at, status))
    tiers: dict[str, list[tuple[float, int, int]]] = {}
    for job_id, created_s, delay_ms, due_ms in retries:
        tiers.setdefault(job_id, []).append((created_s, delay_ms, due_ms))
    out: list[float] = []
    due_vs_answer: list[float] = []
    for job_id, seen in by_job.items():
        seen.sort()
        written = sorted(tiers.get(job_id, []))
        for (failed_at, status), (next_at, _) in pairwise(seen):
            if status != 503:
                continue
            # Record timestamps have millisecond resolution: one written in the 503's own
            # millisecond is still the 503's.
            since = int(failed_at * 1000) / 1000
            tier = next(((d, due) for created, d, due in written if created >= since), None)
            if tier is not None:
                delay, due = tier
                out.append((next_at - failed_at) * 1000 - delay)
                due_vs_answer.append(due - (failed_at * 1000 + delay))
    return sorted(out), sorted(due_vs_answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="jobs per second")
    parser.add_argument("--share-503", type=float, default=0.5)
    args = parser.parse_args()
    with bench_workspace("retry", certificates=1) as (directory, pki):
        kafka, topics = fresh_kafka()
        create_retry_topics(kafka, DELAYS_MS)
        config = SimulatorConfig.from_pki(pki.pki)
        faults = Faults(share_503=args.share_503, seed=3)
        with AnswerLog.run_in_thread(config, None, faults) as sim:
            settings = sender_settings(pki, sim.url, retry_delays_ms=DELAYS_MS,
                                       default_max_attempts=20)
            with sender_process(settings, kafka, directory / "sender.log"):
                outcomes = Reader(kafka, topics.outcomes)
                limit = time.monotonic() + args.jobs / args.rate + 60
                step = max(1, int(args.rate / 10))
                token_to_job: dict[str, str] = {}
                for first in range(0, args.jobs, step):
                    batch = [job(pki.topics[0], i) for i in range(first,
                                                                  min(args.jobs, first + step))]
                    token_to_job.update((j["token_hex"], j["job_id"]) for j in batch)
                    produce_jobs(kafka, topics.jobs_bulk, batch)
                    time.sleep(step / args.rate)
                while time.monotonic() < limit:
                    outcomes.poll(0.2)
                    done = {r["job_id"] for r in outcomes.records if r["state"] == "SENT"}
                    if len(done) >= args.jobs:
                        break
            assert isinstance(sim.sim, AnswerLog)
            answers = list(sim.sim.answers)
        outcomes.drain()
        due: dict[tuple[str, int], int] = {}
        retries: list[tuple[str, float, int, int]] = []
        for delay in DELAYS_MS:
            reader = Reader(kafka, topics.retry(delay))
            for record in reader.drain():
                due[(record["job_id"], record["attempt"])] = not_before_of(record)
                retries.append((record["job_id"], record["_ts"] / 1000, delay,
                                not_before_of(record)))
            reader.close()
        at_sim, due_vs_answer = lateness_at_simulator(answers, token_to_job, retries)
        # An "early" push is either sent before its due time or a second send of the same
        # attempt; a job with more arrivals than retry records + 1 was sent twice somewhere.
        pushes = Counter(token_to_job[t] for _, t, _ in answers if t in token_to_job)
        retried = Counter(job_id for job_id, *_ in retries)
        sent_twice = sum(1 for j, n in pushes.items() if n > retried[j] + 1)
        own = sorted(
            r["at"] - r["latency_ms"] - due[(r["job_id"], r["attempt"])]
            for r in outcomes.records
            if r["attempt"] >= 1 and (r["job_id"], r["attempt"]) in due
        )
        outcomes.close()
        if not at_sim or not own:
            sys.exit("no retried sends measured")
        p99 = percentile(at_sim, 0.99)
        met = p99 <= 200 and at_sim[0] >= 0
        print(f"tiers {DELAYS_MS} ms, {len(at_sim)} retried pushes at the simulator: lateness "
              f"p50 {statistics.median(at_sim):.1f} ms, p99 {p99:.1f} ms, "
              f"max {at_sim[-1]:.1f} ms, min {at_sim[0]:.1f} ms "
              f"(never early: {'yes' if at_sim[0] >= 0 else 'NO'}; "
              f"bar p99 <= 200 ms and never early: {'MET' if met else 'MISSED'})")
        print(f"  the sender's due time - (503 answered + delay): min {due_vs_answer[0]:.1f} ms, "
              f"p50 {statistics.median(due_vs_answer):.1f} ms; early pushes: "
              f"{sum(x < 0 for x in at_sim)} of {len(at_sim)}; jobs pushed more often than "
              f"retried + 1: {sent_twice}")
        print(f"  the sender's own stamps (replaced method), {len(own)} sends: "
              f"p50 {statistics.median(own):.1f} ms, p99 {percentile(own, 0.99):.1f} ms, "
              f"min {own[0]:.1f} ms")
        sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
