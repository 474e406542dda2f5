"""End to end: one request for N devices (default 100,000) through Kafka, the fan-out and the
sender until the last push has arrived at the APNs simulator; beside it, in the same run, the
sender alone (the same N jobs pre-produced to Kafka) against the same kind of simulator
process, once before and once after (the ratio is against their mean: the load moves).

Run: .venv/bin/python -m tests.bench.bench_e2e [N]

Method (both runs alike): the simulator runs in a process of its own and records each push's
arrival (``tests/bench/sim_arrivals.py``); the correlator runs in both (it reads every outcome,
as in production); every time is an arrival time at the simulator or the moment the request
was published. The sender alone's jobs are produced before its clock starts: its time is first
to last arrival. End to end is from publishing the request to the last arrival (registry built
beforehand). Compare the sender-alone rate with ``bench_sender.py``'s (which has no Kafka).
Bars: end to end <= 30 s for 100,000 devices, and >= 0.8x the sender alone's rate.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from services.common.settings import KafkaSettings
from services.devstack.procs import wait_for
from services.devstack.service_process import ServiceProcess
from services.sdk.publisher import PushPublisher, PushRequest
from tests.bench.sim_arrivals import Arrivals, arrivals_sim
from tests.support.bench_env import fresh_kafka
from tests.support.bench_stack import (
    check_alive,
    produce,
    stack,
    token_updates,
    topic_records,
    wait_registry,
)
from tests.support.sender_harness import make_certs

PARTITIONS = 4


def _token(i: int) -> str:
    return f"{i:064x}"


def _wait_outcomes(kafka: KafkaSettings, topic: str, n: int,
                   procs: dict[str, ServiceProcess]) -> None:
    """Until the outcomes topic holds n records (the sender's, at least one per job) and has
    stopped growing for a moment: the times themselves come from the simulator, not from here."""

    def enough() -> bool:
        check_alive(procs)
        return topic_records(kafka, topic) >= n

    if not wait_for(enough, 600, interval_s=0.5):
        raise SystemExit(f"fewer than {n} outcomes after 600 s")
    last = -1
    while (now := topic_records(kafka, topic)) != last:
        last = now
        time.sleep(2)


def sender_alone(n: int, directory: Path) -> tuple[Arrivals, str]:
    """One sender and the correlator, n jobs produced before they start."""
    pki = make_certs(directory / "pki", 1)
    topic = pki.topics[0]
    kafka, topics = fresh_kafka(partitions=PARTITIONS)
    now = int(time.time() * 1000)
    produce(kafka, topics.jobs_bulk, "PushJob", (
        (topic, {"job_id": f"r/{i}", "request_id": "r", "tenant": "acme",
                 "enrollment_id": f"E{i}", "lane": "BULK", "kind": "MDM", "topic": topic,
                 "token_hex": _token(i), "push_magic": f"m{i}", "created_at": now})
        for i in range(n)))
    with arrivals_sim(pki.pki.directory, directory) as (port, result), stack(
            kafka, directory, pki, port, fanout=False, correlator=True,
            partitions=PARTITIONS) as procs:
        _wait_outcomes(kafka, topics.outcomes, n, procs)
    return result[0], topic


def end_to_end(n: int, directory: Path) -> tuple[Arrivals, float, float]:
    """(arrivals, epoch s the request was published, s to build the registry beforehand)."""
    pki = make_certs(directory / "pki", 1)
    topic = pki.topics[0]
    kafka, topics = fresh_kafka(partitions=PARTITIONS)
    with arrivals_sim(pki.pki.directory, directory) as (port, result), stack(
            kafka, directory, pki, port, fanout=True, correlator=True,
            partitions=PARTITIONS) as procs:
        t0 = time.monotonic()
        produce(kafka, topics.checkins, "CheckinEvent",
                token_updates("acme", topic, ((f"E{i}", _token(i)) for i in range(n))))
        wait_registry(kafka, (f"E{i}" for i in range(n)), procs)
        registry_s = time.monotonic() - t0
        published = time.time()
        PushPublisher(kafka).publish(PushRequest(tenant="acme", target_all=True))
        _wait_outcomes(kafka, topics.outcomes, n, procs)
    return result[0], published, registry_s


def main(n: int) -> int:
    # Sender alone before and after end to end: on a shared machine the load moves between
    # runs, and the ratio is taken against their mean.
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        before, _ = sender_alone(n, Path(tmp) / "alone-before")
        e2e, published, registry_s = end_to_end(n, Path(tmp) / "e2e")
        after, _ = sender_alone(n, Path(tmp) / "alone-after")
    complete = all(a.accepted == n for a in (before, e2e, after))  # one push per device
    alone = [a.at[-1] - a.at[0] for a in (before, after)]
    alone_s = sum(alone) / 2
    e2e_s = e2e.at[-1] - published
    ratio = alone_s / e2e_s
    for name, arrivals, took in (("before", before, alone[0]), ("after", after, alone[1])):
        print(f"sender alone (+ correlator), {name}: {arrivals.accepted:,}/{n:,} pushes arrived,"
              f" first to last in {took:.1f} s = {(n - 1) / took:,.0f} pushes/s")
    print(f"end to end (+ correlator):   {e2e.accepted:,}/{n:,} pushes arrived, request to last "
          f"in {e2e_s:.1f} s = {n / e2e_s:,.0f} pushes/s; first push "
          f"{e2e.at[0] - published:.2f} s after the request (registry of {n:,} built "
          f"beforehand in {registry_s:.1f} s)")
    bar_time = 30 * n / 100_000
    met = complete and ratio >= 0.8 and e2e_s <= bar_time
    print(f"ratio end to end / sender alone (mean of both): {ratio:.2f} (bar >= 0.8); "
          f"end to end {e2e_s:.1f} s "
          f"(bar <= {bar_time:.0f} s for {n:,}, i.e. 30 s per 100,000): "
          f"{'MET' if met else 'MISSED'}"
          + ("" if complete else " (not exactly one push per device arrived)"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
