"""Soak (issue 11 item 4): a steady push rate for `--minutes`, a service SIGKILLed and restarted
every `--fault-every-s` (fan-out, sender, correlator in turn); RSS and consumer lag sampled every
few seconds; at the end nothing lost, RSS flat, lag bounded. Writes a PNG of RSS and lag.

Run: .venv/bin/python tests/bench/bench_soak.py [--minutes 30] [--fault-every-s 180]
        [--devices 5000] [--rate 100] [--png docs/img/soak/soak-30min.png]
     (MDMPUSH_TEST_BOOTSTRAP or the broker at 127.0.0.1:9092; a fresh topic prefix)

Processes: the fan-out, one sender, the correlator (tests/support/bench_stack.py), the APNs
simulator (its own process) and the devices (tests/support/device_answers.py: each answers its
push a second after APNs accepted it). A registry of `--devices` is built first; then requests of
50 devices each, cycling through the registry, at `--rate` targets/s (pushes, or coalesced riders
when a device's previous push is still outstanding).

A killed service is started again 2 s later (the supervisor's restart). After the last minute no
more requests are published and the run waits (bounded) until every (request, target) has its
terminal outcome; then:
- lost: targets of published requests without a terminal outcome; doubled: with more than one
  (services/common/accounting.py) — bar: 0 and 0;
- RSS flat: per service and per life (between its restarts), the least-squares slope of RSS over
  the life's samples after its first 60 s — bar: <= 1 MiB/min (a leak of one 100-byte object per
  push at 100 pushes/s is 0.6 MiB/min), judged on lives of at least 3 minutes;
- lag bounded: each group's lag sampled just before every fault (the system had the whole
  interval to recover from the previous one) — bar: <= 30 s of the push rate.
Exit 1 on any MISSED.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from services.common.admin import admin_client
from services.common.settings import KafkaSettings
from services.correlator.settings import CorrelatorSettings
from services.devstack.procs import free_port, wait_for
from services.devstack.service_process import ServiceProcess
from services.sdk.publisher import PushPublisher, PushRequest
from tests.bench.bench_fleet import PENDING, devices_process
from tests.bench.sim_arrivals import arrivals_sim
from tests.support.bench_env import fresh_kafka
from tests.support.bench_stack import (
    Sample,
    Sampler,
    Verdicts,
    check_alive,
    exit_on_sigterm,
    metric_sum,
    produce,
    read_verdicts,
    stack,
    token_updates,
    wait_registry_count,
)
from tests.support.sender_harness import make_certs

PARTITIONS = 4
PER_REQUEST = 50
RESTART_AFTER_S = 2.0
SLOPE_BAR_MIB_PER_MIN = 1.0
LAG_BAR_S = 30.0
WARM_S = 60.0
MIN_LIFE_S = 180.0
KILLED_IN_TURN = ("fan-out", "sender", "correlator")


@dataclass
class Soak:
    """What happened: requests (id -> targets), faults (sampler seconds, service)."""

    requests: dict[str, list[str]] = field(default_factory=dict)
    faults: list[tuple[float, str]] = field(default_factory=list)
    restarts_unplanned: list[tuple[float, str]] = field(default_factory=list)
    end_publish: float = 0.0


def supervise(procs: dict[str, ServiceProcess], soak: Soak, t: float) -> None:
    """Restart a service that exited by itself (as Kubernetes would), and say so."""
    for name, proc in procs.items():
        if not proc.alive and name != "devices":
            soak.restarts_unplanned.append((t, name))
            tail = "\n".join(line[:300] for line in proc.log_tail(2).splitlines())
            print(f"   {t:6.0f} s: {name} exited by itself; restarted; its log ended:\n{tail}",
                  flush=True)
            proc.start()


def roll_segments(kafka: KafkaSettings, segment_ms: int) -> list[str]:
    """Set segment.ms on every compacted topic of the run's prefix; returns their names."""
    admin = admin_client(kafka)
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(kafka.topic_prefix)]
    described = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name) for name in names])
    compacted = [resource.name for resource, future in described.items()
                 if "compact" in future.result(timeout=30)["cleanup.policy"].value]
    updates = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry("segment.ms", str(segment_ms),
                    incremental_operation=AlterConfigOpType.SET)]) for name in compacted]
    for future in admin.incremental_alter_configs(updates).values():
        future.result(timeout=30)
    return compacted


def run_soak(kafka: KafkaSettings, procs: dict[str, ServiceProcess], sampler: Sampler,
             devices: int, minutes: float, fault_every_s: float, rate: float) -> Soak:
    soak = Soak()
    publisher = PushPublisher(kafka)
    interval = PER_REQUEST / rate
    end = time.monotonic() + minutes * 60
    next_fault = time.monotonic() + fault_every_s
    turn, cursor, sent = 0, 0, 0
    started = time.monotonic()
    while time.monotonic() < end:
        targets = [f"E{(cursor + i) % devices}" for i in range(PER_REQUEST)]
        cursor = (cursor + PER_REQUEST) % devices
        request = PushRequest(tenant="acme", enrollment_ids=targets)
        publisher.publish(request)
        soak.requests[request.request_id] = targets
        sent += 1
        now = time.monotonic()
        if now >= next_fault:
            name = KILLED_IN_TURN[turn % len(KILLED_IN_TURN)]
            turn += 1
            t = time.time() - sampler.started
            soak.faults.append((t, name))
            print(f"   {t:6.0f} s: SIGKILL {name}", flush=True)
            procs[name].kill()
            time.sleep(RESTART_AFTER_S)
            procs[name].start()
            next_fault = now + fault_every_s
        supervise(procs, soak, time.time() - sampler.started)
        # Keep the schedule: the n-th request is due at started + n x interval.
        time.sleep(max(0.0, started + sent * interval - time.monotonic()))
    soak.end_publish = time.time() - sampler.started
    return soak


def settle(kafka: KafkaSettings, procs: dict[str, ServiceProcess], soak: Soak,
           metrics_port: int, limit_s: float, since_ms: int) -> Verdicts:
    """Wait (bounded) until the correlator holds nothing pending, then until every target of
    every request has a terminal outcome; returns the last reading."""
    deadline = time.monotonic() + limit_s

    def nothing_pending() -> bool:
        check_alive(procs)
        return metric_sum(metrics_port, PENDING) == 0

    wait_for(nothing_pending, limit_s, interval_s=2.0)
    while True:
        verdicts = read_verdicts(kafka, since_ms=since_ms)
        if not lost(soak, verdicts) or time.monotonic() > deadline:
            return verdicts
        time.sleep(15)


def lost(soak: Soak, verdicts: Verdicts) -> int:
    return sum(1 for rid, targets in soak.requests.items() for target in targets
               if target not in verdicts.states.get(rid, {}))


def slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, KiB) points, in MiB per minute."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60 / 1024


def lives(samples: list[Sample], soak: Soak, name: str) -> list[list[tuple[float, float]]]:
    """The RSS samples of `name` split at its restarts, each without its first WARM_S."""
    edges = [t for t, n in soak.faults + soak.restarts_unplanned if n == name]
    cuts = [0.0, *sorted(edges), float("inf")]
    out = []
    for lo, hi in itertools.pairwise(cuts):
        life = [(s.t, float(s.rss_kb.get(name, 0))) for s in samples
                if lo + WARM_S <= s.t < hi and s.t <= soak.end_publish and s.rss_kb.get(name)]
        if life:
            out.append(life)
    return out


def plot(samples: list[Sample], soak: Soak, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k for s in samples for k in s.rss_kb})
    groups = sorted({k for s in samples for k in s.lag})
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    ts = [s.t / 60 for s in samples]
    for name in names:
        top.plot(ts, [s.rss_kb.get(name, 0) / 1024 for s in samples], label=name)
    for name in groups:
        bottom.plot(ts, [max(s.lag.get(name, 0), 0) for s in samples], label=name)
    for ax in (top, bottom):
        for t, _ in soak.faults:
            ax.axvline(t / 60, color="red", alpha=0.3, linestyle="--")
        for t, _ in soak.restarts_unplanned:
            ax.axvline(t / 60, color="black", alpha=0.3, linestyle=":")
        ax.axvline(soak.end_publish / 60, color="grey", alpha=0.5)
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    top.set_ylabel("RSS (MiB)")
    bottom.set_ylabel("consumer lag (records)")
    bottom.set_xlabel("minutes (red dashed: SIGKILL + restart; grey: last request)")
    top.set_title(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def report(soak: Soak, verdicts: Verdicts, sampler: Sampler, rate: float,
           load: tuple[float, float], minutes: float) -> int:
    samples = sampler.samples
    targets = sum(len(t) for t in soak.requests.values())
    missing = lost(soak, verdicts)
    states: dict[str, int] = {}
    for rid in soak.requests:
        for state, count in verdicts.count(rid).items():
            states[state] = states.get(state, 0) + count
    print(f"soak: {minutes:g} min of requests, {len(soak.requests):,} requests, {targets:,} "
          f"targets; load average at start {load[0]:.1f}, at end {load[1]:.1f} (2 cores)")
    print(f"faults: {', '.join(f'{n} at {t / 60:.1f} min' for t, n in soak.faults) or 'none'}; "
          f"unplanned restarts: "
          f"{', '.join(f'{n} at {t / 60:.1f} min' for t, n in soak.restarts_unplanned) or 'none'}")
    by_state = ", ".join(f"{k} {v:,}" for k, v in sorted(states.items()))
    accounted = missing == 0 and verdicts.doubled == 0
    print(f"accounting: {by_state}; lost {missing:,}, doubled {verdicts.doubled:,} "
          f"(bar 0 and 0): {'MET' if accounted else 'MISSED'}")
    flat = True
    for name in sorted(sampler.peak_kb):
        slopes = [(life[-1][0] - life[0][0], slope_mib_per_min(life))
                  for life in lives(samples, soak, name) if len(life) >= 3]
        judged = [s for span, s in slopes if span >= MIN_LIFE_S]
        ok = all(s <= SLOPE_BAR_MIB_PER_MIN for s in judged)
        flat &= ok
        shown = ", ".join(f"{s:+.2f} ({span / 60:.1f} min)" for span, s in slopes) or "none"
        # Where each life settles: a restart that restores more history sits higher (bounds.md).
        plateaus = ", ".join(f"{statistics.median(v for _, v in life) / 1024:.0f}"
                             for life in lives(samples, soak, name))
        print(f"RSS {name:>10}: peak {sampler.peak_kb[name] / 1024:.1f} MiB; median per life "
              f"{plateaus or 'none'} MiB; slope per life "
              f"{shown} MiB/min (bar <= {SLOPE_BAR_MIB_PER_MIN:g} on lives >= "
              f"{MIN_LIFE_S / 60:.0f} min): "
              f"{'MISSED' if not ok else 'MET' if judged else 'not judged (no life long enough)'}")
    bound = int(rate * LAG_BAR_S)
    bounded = True
    for group in sorted({k for s in samples for k in s.lag}):
        before_faults = []
        for t, _ in [*soak.faults, (soak.end_publish, "end")]:
            prior = [s for s in samples if s.t < t and s.lag.get(group, -1) >= 0]
            if prior:
                before_faults.append(prior[-1].lag[group])
        peak = max((s.lag.get(group, 0) for s in samples), default=0)
        ok = all(v <= bound for v in before_faults)
        bounded &= ok
        print(f"lag {group:>10}: peak {peak:,}; just before each fault / the end "
              f"{before_faults} (bar <= {bound:,} = {LAG_BAR_S:.0f} s of the rate): "
              f"{'MET' if ok else 'MISSED'}")
    return 0 if accounted and flat and bounded else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every-s", type=float, default=180.0)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=100.0, help="targets per second")
    parser.add_argument("--settle-s", type=float, default=420.0,
                        help="longest wait for every verdict after the last request")
    parser.add_argument("--png", type=Path, help="default docs/img/soak/soak-<minutes>min.png")
    parser.add_argument("--segment-ms", type=int,
                        help="segment.ms of the run's compacted topics (faust's changelogs "
                             "included), set once the registry is built: the production value "
                             "(an hour, catalogue.COMPACTION) leaves a soak shorter than that "
                             "uncompacted, so every restore reads the whole run's history")
    parser.add_argument("--correlator-dedupe", type=int,
                        help="MDMPUSH_CORRELATOR_DEDUPE_CAPACITY for the run: its recent-verdict "
                             "filter (100,000 job ids by default), allocated whole at start "
                             "(services/correlator/recent.py), fills in capacity/rate seconds")
    args = parser.parse_args()
    exit_on_sigterm()
    png = args.png or Path(f"docs/img/soak/soak-{args.minutes:g}min.png")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        directory = Path(tmp)
        pki = make_certs(directory / "pki", 1)
        kafka, topics = fresh_kafka(partitions=PARTITIONS)
        metrics_port = free_port()
        answering = devices_process(kafka, directory, 1.0)
        with arrivals_sim(pki.pki.directory, directory) as (port, _), stack(
                kafka, directory, pki, port, fanout=True, correlator=True,
                partitions=PARTITIONS,
                correlator_env={"MDMPUSH_CORRELATOR_METRICS_PORT": str(metrics_port),
                                **({"MDMPUSH_CORRELATOR_DEDUPE_CAPACITY":
                                    str(args.correlator_dedupe)}
                                   if args.correlator_dedupe else {})}) as procs:
            answering.start()
            try:
                produce(kafka, topics.checkins, "CheckinEvent", token_updates(
                    "acme", pki.topics[0],
                    ((f"E{i}", f"{i:064x}") for i in range(args.devices))))
                if not wait_registry_count(kafka, args.devices, procs, 900):
                    raise SystemExit("the registry was not built in 900 s")
                if args.segment_ms:
                    compacted = roll_segments(kafka, args.segment_ms)
                    print(f"segment.ms {args.segment_ms:,} on {len(compacted)} compacted "
                          f"topics", flush=True)
                print(f"registry of {args.devices:,} built; soak starts", flush=True)
                sampler = Sampler(kafka, procs, interval_s=5.0,
                                  probe=lambda: {"pending": metric_sum(metrics_port, PENDING)})
                since_ms = int(time.time() * 1000)
                sampler.start()
                try:
                    soak = run_soak(kafka, procs, sampler, args.devices, args.minutes,
                                    args.fault_every_s, args.rate)
                    verdicts = settle(kafka, {**procs, "devices": answering}, soak,
                                      metrics_port, args.settle_s, since_ms)
                finally:
                    sampler.stop()
            finally:
                answering.terminate()
    load = (load_start, os.getloadavg()[0])
    capacity = args.correlator_dedupe or CorrelatorSettings().dedupe_capacity
    print(f"correlator recent-verdict filter: {capacity:,} job ids in memory allocated at start, "
          f"full after ~{capacity / args.rate / 60:.1f} min of verdicts in each life")
    code = report(soak, verdicts, sampler, args.rate, load, args.minutes)
    plot(sampler.samples, soak, png,
         f"soak {args.minutes:g} min, {args.rate:g} targets/s, SIGKILL every "
         f"{args.fault_every_s:g} s (fan-out, sender, correlator in turn)")
    print(f"plot: {png}")
    sys.exit(code)


if __name__ == "__main__":
    main()
