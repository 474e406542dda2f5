"""Throttle accuracy at the simulator: rate per certificate vs its policy, 1 and 3 senders.

Usage: ``.venv/bin/python tests/bench/bench_throttle.py [--window-50 S] [--window-6000 S]
[--shards N] [--bar] [--multi | --only-multi [--instances 1,2] [--multi-devices N]]``

Scenarios, all at once, each on its own topic prefix with its own sender processes, its own
certificates and a bulk backlog larger than the window can drain; policies (FARM scope) are
published on the config topic before the senders start:

- 50/min and 6,000/min with one sender (one shard);
- 50/min with three senders, and 6,000/min + 3,000/min (two certificates) with the same three
  senders: each certificate split into ``--shards`` shards (jobs keyed ``certificate#shard`` by
  the fan-out's own ``job_key``, over as many jobs partitions), so every sender owns some shards
  and sends; the farm-wide rate per certificate is what the policy promises.

Measured where the pushes land: the simulator records each push's arrival time and connection
(``sim_arrivals.py``); the sender's own outcome stamps are not used. Per certificate: the rate
(arrivals - 1) / (last - first) within the window after a warm-up, its error against the policy
(bar ±2 %), the largest number of arrivals in any 1-second window of the whole run (start
included) beside the most the buckets let out in any second (`TokenBucket.most_in`, a late turn
made up included), and how many connections (one per sender process) carried its pushes.

``--multi`` adds issue 12's multi-instance run (`multi_instance`): fan-out workers and senders,
one + one and then two + two, from check-ins to pushes; combined pushes/s and the same
per-certificate figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Consumer

from services.common.kafka.logs import client_logger
from services.common.kafka.producer import ReliableProducer
from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.fanout.jobs import job_key
from services.sdk.policy import PolicyPublisher, PushPolicy
from services.sdk.publisher import PushPublisher, PushRequest
from services.sender.throttle import TokenBucket
from services.sim.apns.server import SimulatorConfig
from tests.bench.bench_fanout import records_on
from tests.bench.sim_arrivals import ArrivalsGateway, ArrivalsSimulator, largest_burst, rate
from tests.fanout.harness import Worker
from tests.support.bench_env import bench_workspace, fresh_kafka, stopping
from tests.support.sender_harness import (
    SERDE,
    Pki,
    job,
    produce_jobs,
    sender_settings,
    spawn_sender,
)

WARM_UP_S = 5.0


@dataclass
class Scenario:
    """Senders sharing one deployment; each certificate has its own bulk rate."""

    senders: int
    shards: int
    rates: dict[str, float]  # certificate topic -> bulk pushes per minute
    window_s: float

    def label(self, topic: str) -> str:
        return (f"{self.rates[topic]:>6,.0f}/min, {self.senders} sender(s), "
                f"{self.shards} shard(s)")


def start(scenario: Scenario, url: str, pki: Pki, directory: Path,
          name: str) -> list[subprocess.Popen[bytes]]:
    """Deployment, backlog and policies for `scenario`, then its sender processes."""
    kafka, topics = fresh_kafka(partitions=max(2, scenario.shards))
    publisher = PolicyPublisher(kafka)
    for topic, per_minute in scenario.rates.items():
        backlog = int(per_minute / 60 * (scenario.window_s + WARM_UP_S + 30)) + 100
        produce_jobs(kafka, topics.jobs_bulk, (job(topic, i) for i in range(backlog)),
                     key=lambda j: job_key(j["topic"], j["enrollment_id"], scenario.shards))
        publisher.set(PushPolicy(topic, bulk_per_minute=per_minute, shards=scenario.shards))
    settings = sender_settings(pki, url)
    return [spawn_sender(settings, kafka, directory / f"{name}-{n}.log")
            for n in range(scenario.senders)]


def report(scenario: Scenario, topic: str, per_minute: float,
           records: list[tuple[float, int, str]]) -> bool:
    """Print one certificate's figures; returns whether its bar is met.

    The farm-wide rate is the sum of each shard's rate, (n - 1) / (last - first) of that shard's
    arrivals: every shard is a periodic stream of its own, and their phases are arbitrary, so
    (n - 1) / span over all of them is off by up to one push per shard whatever the rate. That
    raw figure is printed too, with that bound.
    """
    label = scenario.label(topic)
    times = [t for t, _, _ in records]
    if len(times) < 3:
        print(f"{label}: too few arrivals ({len(times)}) — MISSED")
        return False
    begin = times[0] + WARM_UP_S
    inside = [r for r in records if begin <= r[0] <= begin + scenario.window_s]
    by_shard: dict[str, list[float]] = {}
    for at, _, token in inside:
        key = job_key(topic, f"E{int(token, 16)}", scenario.shards)
        by_shard.setdefault(key, []).append(at)
    sparse = [key for key, shard in by_shard.items() if len(shard) < 2]
    farm = sum(rate(shard) for shard in by_shard.values()) * 60
    raw = rate([t for t, _, _ in inside]) * 60
    error = (farm - per_minute) / per_minute * 100
    bound = scenario.shards / max(1, len(inside)) * 100
    per_connection = Counter(c for _, c, _ in records)
    senders_ok = len(per_connection) == scenario.senders
    complete = len(by_shard) == scenario.shards and not sparse
    met = abs(error) <= 2 and senders_ok and complete
    # What the shards' buckets let out in any second, late turns made up included (throttle.py);
    # arrivals can bunch a little more on their way to the simulator.
    allowed = scenario.shards * TokenBucket(per_minute / scenario.shards).most_in(1.0)
    # A stall (the sender, Kafka or the simulator) shows as one long gap, a slow bucket as
    # evenly long ones.
    gap, gap_at = max(((b[0] - a[0], a[0] - times[0]) for a, b in pairwise(inside)),
                      default=(0.0, 0.0))
    print(f"{label}: {farm:,.2f}/min (sum of {len(by_shard)} shards' rates, {len(inside)} "
          f"arrivals in {scenario.window_s:.0f} s), error {error:+.2f} % (bar ±2 %: "
          f"{'MET' if met else 'MISSED'}); raw (n-1)/span {raw:,.2f}/min "
          f"({(raw - per_minute) / per_minute * 100:+.2f} %, phase bound ±{bound:.1f} %); "
          f"largest 1-s burst {largest_burst(times)} (steady {per_minute / 60:.1f}/s, the "
          f"buckets allow {allowed} at the sender); "
          f"pushes per sending connection {sorted(per_connection.values(), reverse=True)} "
          f"({scenario.senders} sender(s)); longest gap between arrivals in the window "
          f"{gap:.2f} s, {gap_at:.0f} s after the first")
    if not complete:
        print(f"    ! shards seen {len(by_shard)} of {scenario.shards}, with < 2 arrivals: "
              f"{len(sparse)} (window too short for the rate)")
    return met


def multi_instance(args: argparse.Namespace) -> bool:
    """Issue 12's multi-instance run: fan-out workers and senders as several processes on one
    broker, from check-ins to pushes; one fan-out + one sender first, then two + two, each on a
    deployment of its own with the same fleet and policies (every certificate sharded).

    Tenant "throttled" holds the devices of two throttled certificates (6,000 and 3,000/min);
    its request is expanded before the senders start, so they meet a backlog, as the throttle
    needs to be measured. Tenant "acme" holds the devices of an unthrottled certificate; its
    request is published when the senders start: from fan-out to APNs, its rate at the
    simulator is the combined pushes/s.
    """
    combined: dict[int, float] = {}
    met_all = True
    for instances in (int(n) for n in args.instances.split(",")):
        with bench_workspace(f"multi{instances}", certificates=3) as (directory, pki):
            free, fast, slow = pki.topics
            scenario = Scenario(instances, args.shards, {fast: 6000.0, slow: 3000.0},
                                args.window_6000)
            throttled = {t: int(r / 60 * (scenario.window_s + WARM_UP_S + 10)) + 100
                         for t, r in scenario.rates.items()}
            fleet = {free: args.multi_devices, **throttled}
            gateway = ArrivalsGateway()
            sim = ArrivalsSimulator.run_in_thread(SimulatorConfig.from_pki(pki.pki), gateway)
            try:
                pushed = pipeline(args, instances, directory, pki, scenario, fleet, gateway,
                                  sim.url)
                records = {topic: sorted(gateway.records(topic)) for topic in fleet}
            finally:
                sim.stop()
        if not pushed:
            met_all = False
            continue
        free_times = [t for t, _, _ in records[free]]
        combined[instances] = rate(free_times)
        shown = f"{combined[instances]:,.0f} pushes/s"
        if len(free_times) != fleet[free]:
            shown = f"MISSED: {len(free_times):,} of {fleet[free]:,} pushed"
            met_all = False
        connections = len({c for _, c, _ in records[free]})
        print(f"x{instances} ({instances} fan-out worker(s), {instances} sender(s)): unthrottled "
              f"certificate, {fleet[free]:,} devices, request to last push: {shown} at the "
              f"simulator over {connections} connection(s)")
        for topic, per_minute in scenario.rates.items():
            met_all &= report(scenario, topic, per_minute, records[topic])
    if combined.get(1) and combined.get(2):
        print(f"combined pushes/s, two + two / one + one: {combined[2] / combined[1]:.2f}x "
              f"(2 cores shared by every process here)")
    return met_all


def pipeline(args: argparse.Namespace, instances: int, directory: Path, pki: Pki,
             scenario: Scenario, fleet: dict[str, int], gateway: ArrivalsGateway,
             url: str) -> bool:
    """Run one multi-instance deployment (see `multi_instance`); False if it got stuck."""
    kafka, topics = fresh_kafka(partitions=max(2, args.shards))
    publisher = PolicyPublisher(kafka)
    for topic in fleet:
        publisher.set(PushPolicy(topic, bulk_per_minute=scenario.rates.get(topic, 0.0),
                                 shards=scenario.shards))
    tenants = {topic: "throttled" if topic in scenario.rates else "acme" for topic in fleet}
    enroll(kafka, topics.checkins, fleet, tenants)
    workers = [Worker(kafka, directory / f"fanout-{n}",
                      MDMPUSH_FANOUT_PARTITIONS=str(max(2, args.shards)),
                      MDMPUSH_FANOUT_METRICS_PORT="0") for n in range(instances)]
    for worker in workers:
        worker.data_dir.mkdir(parents=True, exist_ok=True)
        worker.start()
    watermarks = Consumer(kafka.consumer_config(f"bench-{uuid.uuid4().hex}"),
                          logger=client_logger("bench"))
    try:
        if not wait_until(lambda: len(load_registry(kafka)) >= sum(fleet.values()),
                          args.limit_s):
            print(f"x{instances}: registry incomplete after {args.limit_s:.0f} s "
                  f"({len(load_registry(kafka)):,} of {sum(fleet.values()):,})")
            for n, worker in enumerate(workers):
                print(f"--- fan-out worker {n}:\n{worker.log_tail(15)}")
            return False
        requests = PushPublisher(kafka)
        requests.publish(PushRequest(tenant="throttled", target_all=True))
        backlog = sum(fleet[t] for t in scenario.rates)
        if not wait_until(lambda: records_on(watermarks, topics.jobs_bulk) >= backlog,
                          args.limit_s):
            print(f"x{instances}: throttled jobs not all expanded after {args.limit_s:.0f} s "
                  f"({records_on(watermarks, topics.jobs_bulk):,} jobs of {backlog:,}; outcomes "
                  f"{records_on(watermarks, topics.outcomes):,})")
            for n, worker in enumerate(workers):
                print(f"--- fan-out worker {n}:\n{worker.log_tail(15)}")
            return False
        settings = sender_settings(pki, url)
        senders = [spawn_sender(settings, kafka, directory / f"sender-{n}.log")
                   for n in range(instances)]
        with stopping(*senders):
            requests.publish(PushRequest(tenant="acme", target_all=True))
            if not wait_pushed(gateway, fleet, scenario, args.limit_s):
                print(f"x{instances}: not all pushed after {args.limit_s:.0f} s")
                for n in range(instances):
                    tail = (directory / f"sender-{n}.log").read_text(errors="replace")
                    print(f"--- sender {n}:\n" + "\n".join(tail.splitlines()[-10:]))
        return True
    finally:
        watermarks.close()
        for worker in workers:
            worker.stop()


def enroll(kafka: KafkaSettings, topic_name: str, fleet: dict[str, int],
           tenants: dict[str, str]) -> None:
    """One TokenUpdate check-in per device: enrollment E<i>, token <i> as 64 hex digits."""
    producer = ReliableProducer(kafka, name="bench-checkins", **{"linger.ms": 20})
    now = int(time.time() * 1000)
    n = 0
    try:
        for certificate, count in fleet.items():
            for _ in range(count):
                eid = f"E{n}"
                producer.produce(topic_name, SERDE.encode("CheckinEvent", {
                    "event_id": f"ev{n}", "enrollment_id": eid, "tenant": tenants[certificate],
                    "message_type": "TOKEN_UPDATE", "udid": eid, "topic": certificate,
                    "token_hex": f"{n:064x}", "push_magic": f"m{n}", "occurred_at": now,
                }), key=eid)
                n += 1
                if n % 10_000 == 0:
                    producer.poll(0)
        producer.flush(60)
    finally:
        producer.close()


def wait_until(condition: Callable[[], bool], limit_s: float) -> bool:
    """Poll `condition` every second until it holds (True) or `limit_s` has passed (False)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return False


def wait_pushed(gateway: ArrivalsGateway, fleet: dict[str, int], scenario: Scenario,
                limit_s: float) -> bool:
    """Until every unthrottled push has arrived and each throttled certificate has had its
    warm-up and window (bounded by `limit_s`: False then)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        done = True
        for topic, count in fleet.items():
            times = [t for t, _, _ in gateway.records(topic)]
            if topic in scenario.rates:
                done &= bool(times) and time.time() > times[0] + WARM_UP_S + scenario.window_s + 2
            else:
                done &= len(times) >= count
        if done:
            return True
        time.sleep(1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-50", type=float, default=120.0)
    parser.add_argument("--window-6000", type=float, default=30.0)
    parser.add_argument("--shards", type=int, default=12, help="shards per certificate (x3)")
    parser.add_argument("--bar", action="store_true", help="exit 1 when a bar is missed")
    parser.add_argument("--multi", action="store_true",
                        help="also the multi-instance run (fan-out workers + senders x1, x2)")
    parser.add_argument("--only-multi", action="store_true", help="the multi-instance run only")
    parser.add_argument("--multi-devices", type=int, default=20_000)
    parser.add_argument("--instances", default="1,2", help="multi-instance runs, e.g. 1,2")
    parser.add_argument("--limit-s", type=float, default=180.0, help="per multi-instance phase")
    args = parser.parse_args()
    if args.only_multi:
        met = multi_instance(args)
        return 1 if args.bar and not met else 0
    with bench_workspace("throttle", certificates=6) as (directory, pki):
        t = pki.topics
        scenarios = [
            Scenario(1, 1, {t[0]: 50.0}, args.window_50),
            Scenario(3, args.shards, {t[1]: 50.0}, args.window_50),
            Scenario(1, 1, {t[2]: 6000.0}, args.window_6000),
            Scenario(3, args.shards, {t[3]: 6000.0, t[4]: 3000.0}, args.window_6000),
        ]
        gateway = ArrivalsGateway()
        sim = ArrivalsSimulator.run_in_thread(SimulatorConfig.from_pki(pki.pki), gateway)
        try:
            procs: list[subprocess.Popen[bytes]] = []
            for n, scenario in enumerate(scenarios):
                procs += start(scenario, sim.url, pki, directory, f"s{n}")
            longest = max(s.window_s for s in scenarios) + WARM_UP_S + 15
            began = time.monotonic()
            with stopping(*procs):
                while time.monotonic() - began < longest:
                    time.sleep(1)
            results = {topic: gateway.records(topic) for s in scenarios for topic in s.rates}
        finally:
            sim.stop()
    print(f"FARM scope, bucket per (certificate#shard, lane); counted at the simulator's arrival "
          f"times; warm-up {WARM_UP_S:.0f} s excluded from the rates (not from the burst)")
    met_all = True
    for scenario in scenarios:
        for topic, per_minute in scenario.rates.items():
            met = report(scenario, topic, per_minute, sorted(results[topic]))
            met_all &= met
    if args.multi:
        met_all &= multi_instance(args)
    return 1 if args.bar and not met_all else 0


if __name__ == "__main__":
    sys.exit(main())
