"""A real correlator process's RSS at `--pending` (1,000,000) pending pushes, fed from Kafka
(issue 11 item 5), beside the in-process traced-heap figure of bench_correlator_memory.py from the
same invocation.

Run: .venv/bin/python tests/bench/bench_correlator_rss.py [--pending 1000000] [--timeout-s 900]
     (MDMPUSH_TEST_BOOTSTRAP or the broker at 127.0.0.1:9092; a fresh topic prefix)

Phases, one correlator process (`python -m services.correlator`, as the stack runs it):
1. started on empty topics: its idle RSS;
2. a TokenUpdate check-in per enrollment (`--pending` distinct enrollments, the ids and shapes
   of bench_correlator_memory.py) produced; once its enrollments gauge holds them all: the
   RSS with the enrollments known (a fleet's correlator knows its enrollments whether or not a
   push is pending, which is why the bar is defined with them known);
3. a SENT outcome per enrollment produced (deadline and race window of 2 hours: none is judged
   during the run); once its pending gauge holds them all and its consumer group's lag is 0:
   the RSS with every push pending.
Bytes per pending push = (RSS after 3 - RSS after 2) / pending, printed at once. Then, with the
process stopped, two peers: the same records, decoded, fed to a CorrelatorCore in a fresh process
without Kafka (its RSS the same way: what the Kafka side adds is the difference; `--core-only`
runs this one alone), and the in-process figure (PendingStore under tracemalloc, enrollments
known; at 1,000,000 it takes minutes more under tracemalloc). No bar is judged on RSS here: the bar
(<= 200 B) is defined on the traced heap (the in-process figure).
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.correlator.core import CorrelatorCore
from services.correlator.settings import CorrelatorSettings
from services.devstack.procs import free_port
from services.devstack.service_process import ServiceProcess
from tests.bench.bench_correlator_memory import enrollment, measure
from tests.support.bench_env import fresh_kafka
from tests.support.bench_stack import (
    exit_on_sigterm,
    group_lag,
    metric_sum,
    produce,
    rss_kb,
    service_env,
)

PARTITIONS = 4
TENANT = "acme"
TOPIC = "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001"
#: Longer than any run: no push is judged (or re-pushed) while the figure is taken.
HOLD_MS = 2 * 3_600_000
PENDING_METRIC = "mdmpush_correlator_pending"
ENROLLMENTS_METRIC = "mdmpush_correlator_enrollments"


def token(i: int) -> str:
    return uuid.UUID(int=i).hex * 2


def magic(i: int) -> str:
    return str(uuid.UUID(int=i + 7)).upper()


def checkins(count: int, now: int) -> Iterator[tuple[str, dict[str, object]]]:
    for i in range(count):
        enr = enrollment(i)
        yield enr, {"event_id": f"ev-{i}", "enrollment_id": enr, "tenant": TENANT,
                    "message_type": "TOKEN_UPDATE", "udid": enr, "topic": TOPIC,
                    "token_hex": token(i), "push_magic": magic(i), "occurred_at": now}


def outcomes(count: int, now: int) -> Iterator[tuple[str, dict[str, object]]]:
    for i in range(count):
        enr, request = enrollment(i), f"req-{i // 10_000}"
        yield enr, {
            "job_id": f"{request}/{enr}", "request_id": request, "tenant": TENANT,
            "enrollment_id": enr, "state": "SENT", "lane": "BULK", "attempt": 0, "repush": 0,
            "topic": TOPIC, "token_hex": token(i), "push_magic": magic(i),
            "token_updated_at": now - 1, "apns_id": str(uuid.UUID(int=i + 13)), "status": 200,
            "reason": None, "apns_timestamp": None, "latency_ms": 2.0, "at": now}


def wait(what: str, done: Callable[[], bool], proc: ServiceProcess, deadline: float) -> float:
    """Seconds until `done()`; exits (stopping nothing itself) if the process dies or time ends."""
    started = time.monotonic()
    while not done():
        if not proc.alive:
            raise SystemExit(f"the correlator exited while waiting for {what}: {proc.log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(2.0)
    return time.monotonic() - started


def settled_rss_kib(pid: int | None, samples: int = 5) -> int:
    """The smallest of a few RSS samples a second apart (a consume batch in flight is not state)."""
    values = []
    for _ in range(samples):
        values.append(rss_kb(pid)[0])
        time.sleep(1.0)
    return min(values)


def core_rss(n: int) -> tuple[int, int, int]:
    """RSS KiB (idle, enrollments known, every push pending) of this process feeding the same
    records, decoded, to a CorrelatorCore of its own: the correlator without Kafka."""
    def rss() -> int:
        gc.collect()
        return rss_kb(os.getpid())[0]

    core = CorrelatorCore(CorrelatorSettings(deadline_ms=HOLD_MS, race_window_ms=HOLD_MS,
                                             repush_silent=False))
    core.partition_count = 1
    core.take([0])
    core.assign(0, None)
    now = int(time.time() * 1000)
    idle = rss()
    for _, event in checkins(n, now):
        core.checkin(event, now)
    known = rss()
    for offset, (_, record) in enumerate(outcomes(n, now)):
        core.outcome(record, 0, offset, now)
    if len(core.store) != n:
        raise SystemExit(f"the core holds {len(core.store):,} pending, not {n:,}")
    return idle, known, rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="longest the Kafka phases may take in all")
    parser.add_argument("--core-only", action="store_true",
                        help="only the middle peer: the core fed in a process without Kafka")
    args = parser.parse_args()
    exit_on_sigterm()
    n = args.pending
    if args.core_only:
        idle, known, full = core_rss(n)
        print(f"  core without Kafka (CorrelatorCore in a fresh process, same records decoded): "
              f"RSS idle {idle / 1024:.1f} MiB, enrollments known {known / 1024:.1f} MiB "
              f"({(known - idle) * 1024 / n:.0f} B per enrollment), every push pending "
              f"{full / 1024:.1f} MiB: {(full - known) * 1024 / n:.1f} B of RSS per pending push",
              flush=True)
        return
    load_start = os.getloadavg()
    deadline = time.monotonic() + args.timeout_s
    with tempfile.TemporaryDirectory(prefix="bench-corr-rss-") as tmp:
        kafka, topics = fresh_kafka(partitions=PARTITIONS)
        port = free_port()
        env = {**service_env(kafka, Path(tmp)),
               "MDMPUSH_CORRELATOR_METRICS_PORT": str(port),
               "MDMPUSH_CORRELATOR_DEADLINE_MS": str(HOLD_MS),
               "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(HOLD_MS),
               "MDMPUSH_CORRELATOR_REPUSH_SILENT": "false"}
        proc = ServiceProcess("correlator", "services.correlator", env, Path(tmp) / "logs")
        proc.start()
        try:
            wait("its metrics endpoint", lambda: metric_sum(port, PENDING_METRIC) >= 0, proc,
                 deadline)
            time.sleep(5.0)
            idle = settled_rss_kib(proc.pid)
            t0 = time.monotonic()
            produce(kafka, topics.checkins, "CheckinEvent", checkins(n, int(time.time() * 1000)))
            produced_checkins = time.monotonic() - t0
            book_s = wait(f"{n:,} enrollments", lambda: metric_sum(port, ENROLLMENTS_METRIC)
                          >= n, proc, deadline)
            known = settled_rss_kib(proc.pid)
            t0 = time.monotonic()
            produce(kafka, topics.outcomes, "PushOutcome", outcomes(n, int(time.time() * 1000)))
            produced_outcomes = time.monotonic() - t0
            group = env["MDMPUSH_CORRELATOR_GROUP_ID"]
            pending_s = wait(f"{n:,} pending", lambda: metric_sum(port, PENDING_METRIC) >= n
                             and group_lag(kafka, group, [topics.outcomes]) == 0, proc, deadline)
            full = settled_rss_kib(proc.pid)
            pending = int(metric_sum(port, PENDING_METRIC))
            peak = rss_kb(proc.pid)[1]
        finally:
            proc.terminate()
    load_end = os.getloadavg()
    mib = 1024.0
    print(f"correlator process fed from Kafka ({kafka.topic_prefix}*, {PARTITIONS} partitions), "
          f"{n:,} distinct enrollments")
    print(f"  produced {n:,} TokenUpdate check-ins in {produced_checkins:.1f} s; all in the "
          f"book {book_s:.1f} s later; {n:,} SENT outcomes produced in {produced_outcomes:.1f} "
          f"s, all pending with lag 0 {pending_s:.1f} s later (pending gauge {pending:,})")
    print(f"  RSS idle {idle / mib:.1f} MiB; enrollments known {known / mib:.1f} MiB "
          f"({(known - idle) * 1024 / n:.0f} B per enrollment); every push pending "
          f"{full / mib:.1f} MiB; peak (VmHWM) {peak / mib:.1f} MiB")
    print(f"  real process: {(full - known) * 1024 / n:.1f} B of RSS per pending push "
          f"(enrollments known); {(full - idle) * 1024 / n:.1f} B incl. the enrollments")
    print(f"  load average (1/5/15 min) at start {load_start[0]:.1f}/{load_start[1]:.1f}/"
          f"{load_start[2]:.1f}, at the end of the Kafka phases {load_end[0]:.1f}/"
          f"{load_end[1]:.1f}/{load_end[2]:.1f} (2 cores)", flush=True)
    # The peers, measured now that the process is stopped: the core alone in a fresh process
    # (what Kafka's side adds), then the PendingStore's traced heap (the bar's definition,
    # enrollments known; bench_correlator_memory.py also gives it with their interning).
    subprocess.run([sys.executable, __file__, "--core-only", "--pending", str(n)], check=True)
    in_known = measure(n, known_enrollments=True)
    print(f"  in-process, same invocation (PendingStore, tracemalloc): {in_known:.1f} B per "
          f"pending push (enrollments known; bar <= 200: {'MET' if in_known <= 200 else 'MISSED'})"
          f"; the process pays {(full - known) * 1024 / n / in_known:.2f}x that in RSS")


if __name__ == "__main__":
    main()
