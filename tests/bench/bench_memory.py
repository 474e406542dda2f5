"""Bounded memory (issue 11 item 3): floods of unknown devices and unknown certificates must not
grow the services beyond their documented bounds (docs/bounds.md).

Run: .venv/bin/python tests/bench/bench_memory.py [--count 100000] [--rounds 2]
     (MDMPUSH_TEST_BOOTSTRAP or the broker at 127.0.0.1:9092; a fresh topic prefix)

The fan-out, one sender and the correlator run as processes (tests/support/bench_stack.py), the
sender against the APNs simulator in a process of its own. Each round produces, straight to the
Kafka topics (not through the gateway, which holds no per-device state; its flood limits are its
own tests'):
- `count` Authenticate check-ins of random, never-enrolled UDIDs of a valid tenant to the
  check-ins topic: the one check-in that creates fan-out state for an unknown device (a pending
  record, removed after MDMPUSH_FANOUT_PENDING_ENROLLMENT_TTL_MS; 30 s here, 24 h in production),
  and a new row in the correlator's enrollment book (refused past
  MDMPUSH_CORRELATOR_MAX_ENROLLMENTS; 20,000 here, 2,000,000 in production);
- `count` PushJobs, each for a random certificate topic (also its key) to the bulk jobs topic:
  the sender makes a throttle bucket and a breaker per key / topic, answers FAILED WrongTopic
  (no such certificate), and drops both when idle (every 60 s). They name 100 enrollments:
  jobs only ever come from the fan-out, for enrollments of its registry.
A round ends when every service has consumed it, the fan-out has expired the pending records
and the sender's eviction has run; then each service's RSS is read (/proc VmRSS; peak = VmHWM).
Bars per service: the first round's growth within the documented bound, and the state flat
from round to round — each later round grows RSS by at most 10 % of the first round's growth
plus 8 MiB (allocator noise): a leak of one object per record would exceed it.
Exit 1 on any MISSED.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, wait_for
from services.devstack.service_process import ServiceProcess
from tests.bench.sim_arrivals import arrivals_sim
from tests.support.bench_env import fresh_kafka
from tests.support.bench_stack import (
    check_alive,
    checkin,
    exit_on_sigterm,
    metric_sum,
    produce,
    rss_kb,
    service_lag,
    stack,
)
from tests.support.sender_harness import make_certs

PARTITIONS = 4
TTL_MS = 30_000
SWEEP_S = 5.0
MAX_ENROLLMENTS = 20_000
#: The sender drops idle buckets and closed breakers this often (services/sender/service.py).
SENDER_EVICT_S = 60.0
#: Bytes per correlator enrollment row (docs/fleet-care.md, measured at 50,000 rows).
ROW_BYTES = 340
#: librdkafka may prefetch this much per consumer (queued.max.messages.kbytes' default, 64 MiB):
#: memory a flood fills and that stays allocated, bounded by configuration, not by the input.
PREFETCH_MIB = 64
MIB = 1024 * 1024
#: The stray jobs name this many enrollments: jobs come from the fan-out only, for enrollments
#: of its registry, so the correlator rows their outcomes create are bounded by the registry
#: (docs/fleet-care.md), not by this flood; the correlator's cap is measured on the check-ins.
STRAY_ENROLLMENTS = 100


def bounds(count: int) -> dict[str, tuple[float, str]]:
    """Per service: (growth bound of the first round in MiB, what the bound is made of)."""
    correlator = MAX_ENROLLMENTS * ROW_BYTES / MIB
    return {
        "fan-out": (PREFETCH_MIB + 64,
                    f"pending records expire after the TTL ({TTL_MS / 1000:.0f} s): none left; "
                    f"+ {PREFETCH_MIB} MiB prefetch + 64 MiB for one TTL window's records "
                    f"held until swept"),
        "sender": (PREFETCH_MIB + 32,
                   f"idle buckets/breakers dropped every {SENDER_EVICT_S:.0f} s: none left; "
                   f"+ {PREFETCH_MIB} MiB prefetch + 32 MiB for the buffered jobs "
                   f"(buffer_per_partition x partitions)"),
        "correlator": (correlator + PREFETCH_MIB * 2,
                       f"max_enrollments {MAX_ENROLLMENTS:,} x {ROW_BYTES} B = {correlator:.1f}"
                       f" MiB + 2 x {PREFETCH_MIB} MiB prefetch (check-ins, outcomes)"),
    }


def authenticates(count: int) -> list[tuple[str, dict[str, object]]]:
    ids = [uuid.uuid4().hex.upper() for _ in range(count)]
    return [(i, checkin("acme", i, "AUTHENTICATE")) for i in ids]


def stray_jobs(count: int) -> list[tuple[str, dict[str, object]]]:
    now = int(time.time() * 1000)
    jobs = []
    for i in range(count):
        topic = f"com.apple.mgmt.External.{uuid.uuid4()}"
        jobs.append((topic, {
            "job_id": f"stray/{uuid.uuid4().hex}", "request_id": "stray", "tenant": "acme",
            "enrollment_id": f"S{i % STRAY_ENROLLMENTS}", "lane": "BULK", "kind": "MDM",
            "topic": topic, "token_hex": f"{i:064x}", "push_magic": f"m{i}", "created_at": now}))
    return jobs


def rss_mib(procs: dict[str, ServiceProcess]) -> dict[str, tuple[float, float]]:
    return {name: tuple(v / 1024 for v in rss_kb(p.pid))  # type: ignore[misc]
            for name, p in procs.items()}


def feed_round(kafka: KafkaSettings, topics: Topics, procs: dict[str, ServiceProcess],
               count: int, seen: int, ports: dict[str, int], limit_s: float) -> float:
    """Produce one round, wait until it is consumed, expired and evicted; returns seconds."""
    start = time.monotonic()
    produce(kafka, topics.checkins, "CheckinEvent", authenticates(count))
    produce(kafka, topics.jobs_bulk, "PushJob", stray_jobs(count))
    fed = time.monotonic()

    def wait(what: str, done: Callable[[], bool]) -> None:
        def check() -> bool:
            check_alive(procs)
            return done()

        if not wait_for(check, limit_s, interval_s=1.0):
            raise SystemExit(f"{what}: not within {limit_s:.0f} s")

    wait("the fan-out consumed the check-ins",
         lambda: service_lag(kafka, procs, "fan-out", topics.checkins) == 0)
    wait("the sender consumed the jobs",
         lambda: service_lag(kafka, procs, "sender", topics.jobs_bulk) == 0)
    sender_done = time.monotonic()
    wait("the correlator read the outcomes",
         lambda: service_lag(kafka, procs, "correlator") == 0)
    wait("the correlator read the check-ins", lambda: (
        metric_sum(ports["correlator"], "mdmpush_correlator_enrollments")
        + metric_sum(ports["correlator"], "mdmpush_correlator_refused_enrollments_total")
        >= seen))
    wait("the fan-out expired the pending records", lambda: metric_sum(
        ports["fan-out"], "mdmpush_fanout_pending_enrollments_expired_total") >= seen)
    # The sender's eviction runs every 60 s: one full period after its last job, plus margin.
    time.sleep(max(0.0, sender_done + SENDER_EVICT_S + 5 - time.monotonic()))
    print(f"   round fed in {fed - start:.1f} s, consumed, expired and evicted "
          f"{time.monotonic() - start:.1f} s after its start", flush=True)
    return time.monotonic() - start


def run(count: int, rounds: int, limit_s: float) -> int:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        directory = Path(tmp)
        pki = make_certs(directory / "pki", 1)
        kafka, topics = fresh_kafka(partitions=PARTITIONS)
        ports = {"fan-out": free_port(), "correlator": free_port()}
        fanout_env = {"MDMPUSH_FANOUT_METRICS_PORT": str(ports["fan-out"]),
                      "MDMPUSH_FANOUT_PENDING_ENROLLMENT_TTL_MS": str(TTL_MS),
                      "MDMPUSH_FANOUT_REGISTRY_SWEEP_INTERVAL_S": str(SWEEP_S)}
        correlator_env = {"MDMPUSH_CORRELATOR_METRICS_PORT": str(ports["correlator"]),
                          "MDMPUSH_CORRELATOR_MAX_ENROLLMENTS": str(MAX_ENROLLMENTS)}
        with arrivals_sim(pki.pki.directory, directory) as (port, _), stack(
                kafka, directory, pki, port, fanout=True, correlator=True,
                partitions=PARTITIONS, fanout_env=fanout_env,
                correlator_env=correlator_env) as procs:
            # Warm-up: a small round, so "before" is a service that has done this work once.
            warm = max(1000, count // 100)
            print(f"warm-up round of {warm:,} check-ins and {warm:,} jobs", flush=True)
            feed_round(kafka, topics, procs, warm, warm, ports, limit_s)
            readings = [rss_mib(procs)]
            for r in range(rounds):
                print(f"round {r + 1}: {count:,} Authenticates of unknown UDIDs and {count:,} "
                      f"jobs for unknown certificates", flush=True)
                feed_round(kafka, topics, procs, count, warm + (r + 1) * count, ports, limit_s)
                readings.append(rss_mib(procs))
            enrollments = metric_sum(ports["correlator"], "mdmpush_correlator_enrollments")
    load_end = os.getloadavg()
    return report(count, readings, enrollments, (load_start[0], load_end[0]))


def report(count: int, readings: list[dict[str, tuple[float, float]]], enrollments: float,
           load: tuple[float, float]) -> int:
    print(f"load average at start {load[0]:.1f}, at end {load[1]:.1f} (2 cores); correlator "
          f"enrollment rows at the end: {enrollments:,.0f} (cap {MAX_ENROLLMENTS:,})")
    missed = False
    for name, (bound_mib, made_of) in bounds(count).items():
        rss = [r[name][0] for r in readings]
        peak = max(r[name][1] for r in readings)
        first = rss[1] - rss[0]
        later = [b - a for a, b in itertools.pairwise(rss[1:])]
        flat_limit = max(first, 0) * 0.10 + 8
        within = first <= bound_mib
        flat = all(g <= flat_limit for g in later)
        missed |= not (within and flat)
        rounds = ", ".join(f"{v:.1f}" for v in rss[1:])
        print(f"{name:>10}: RSS before {rss[0]:.1f} MiB, after each round {rounds} MiB, "
              f"peak {peak:.1f} MiB")
        print(f"{'':>10}  first round +{first:.1f} MiB (bound {bound_mib:.0f} MiB: {made_of}): "
              f"{'MET' if within else 'MISSED'}")
        if later:
            grown = ", ".join(f"{g:+.1f}" for g in later)
            print(f"{'':>10}  later rounds {grown} MiB (flat: <= {flat_limit:.1f} MiB each): "
                  f"{'MET' if flat else 'MISSED'}")
    return 1 if missed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000,
                        help="check-ins and jobs per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit-s", type=float, default=600.0,
                        help="longest wait for one step of a round")
    args = parser.parse_args()
    exit_on_sigterm()
    sys.exit(run(args.count, args.rounds, args.limit_s))


if __name__ == "__main__":
    main()
