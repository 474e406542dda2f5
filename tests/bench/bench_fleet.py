"""A fleet end to end on the local stack: build the registry of N devices (default 1,000,000),
publish one request to all of them, wait for every verdict.

Run: .venv/bin/python tests/bench/bench_fleet.py [--devices N] [--answer-delay-s S]
     (MDMPUSH_TEST_BOOTSTRAP or the broker at 127.0.0.1:9092; a fresh topic prefix)
     --devices 20000 is the CI-speed sanity form.

Processes: the fan-out, one sender, the correlator (services, via tests/support/bench_stack.py),
the APNs simulator recording each push's arrival (tests/bench/sim_arrivals.py) and the devices
(tests/support/device_answers.py: each device checks in `--answer-delay-s` after APNs accepted
its push, so the correlator answers it). The benchmark process only produces, publishes, samples
and waits.

Phases and what is printed:
- warm-up: one device of another tenant pushed and answered (every service connected);
- registry: N TokenUpdates produced to the check-ins topic, until the registry topic holds them
  all and the fan-out has committed every check-in (check-ins/s);
- request to every verdict (issue 12's bar: <= 90 s for 1,000,000 with the registry built;
  other sizes: the bar scaled linearly): from publishing the request to the last terminal
  outcome written (its record timestamp), first/last push at the simulator (pushes/s counted
  there), verdicts by state, lost (a device without a verdict) and doubled;
- peak RSS per service (the kernel's VmHWM), correlator bytes per pending push (RSS growth from
  the registry-built baseline to the sample with the most pending pushes, over that count),
  each consumer group's peak lag and the seconds from the request until it drained to 0.
Exit 1 when the bar is missed, a push or a verdict is missing or doubled, or a service died.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port, wait_for
from services.devstack.service_process import ServiceProcess
from services.sdk.publisher import PushPublisher, PushRequest
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
    topic_records,
    wait_registry_count,
)
from tests.support.cpu import CpuLedger
from tests.support.device_answers import DELAY_ENV
from tests.support.sender_harness import make_certs

PARTITIONS = 4
#: Issue 12: 1,000,000 devices, registry built, request to every verdict.
BAR_S_PER_MILLION = 90.0
VERDICTS = "mdmpush_correlator_verdicts_total"
PENDING = "mdmpush_correlator_pending"


def _token(i: int) -> str:
    return f"{i:064x}"


def devices_process(kafka: KafkaSettings, directory: Path, delay_s: float) -> ServiceProcess:
    """The devices (tests/support/device_answers.py) as a process of their own."""
    env = {"MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix, DELAY_ENV: str(delay_s)}
    return ServiceProcess("devices", "tests.support.device_answers", env, directory / "logs")


def drain(samples: list[Sample], since: float, name: str) -> tuple[int, float | None]:
    """(peak lag of `name` from `since` (sampler seconds) on, seconds from `since` to the first
    sample after the peak that found it at 0; None if it never drained while sampled)."""
    after = [s for s in samples if s.t >= since and s.lag.get(name, -1) >= 0]
    if not after:
        return 0, None
    peak = max(after, key=lambda s: s.lag[name])
    for s in after:
        if s.t >= peak.t and s.lag[name] == 0:
            return peak.lag[name], s.t - since
    return peak.lag[name], None


class Incomplete(Exception):
    """A phase ran out of time: what it reached is the message."""


@dataclass
class Phases:
    """Epoch seconds of each phase's edges, and the samples taken at the quiet points."""

    request_id: str = ""
    registry_start: float = 0.0
    registry_produced: float = 0.0
    registry_built: float = 0.0
    published: float = 0.0
    verdicts_seen: float | None = None
    idle: Sample | None = None
    baseline: Sample | None = None


def run(n: int, answer_delay_s: float, limit_s: float, out: Path | None) -> int:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        directory = Path(tmp)
        pki = make_certs(directory / "pki", 1)
        kafka, topics = fresh_kafka(partitions=PARTITIONS)
        metrics_port = free_port()
        devices = devices_process(kafka, directory, answer_delay_s)
        phases = Phases()
        ledgers = {"registry": CpuLedger(), "request": CpuLedger()}
        with arrivals_sim(pki.pki.directory, directory) as (port, result), stack(
                kafka, directory, pki, port, fanout=True, correlator=True,
                partitions=PARTITIONS,
                correlator_env={"MDMPUSH_CORRELATOR_METRICS_PORT": str(metrics_port)}) as procs:
            devices.start()
            sampler = Sampler(kafka, procs, interval_s=2.0,
                              probe=lambda: {"pending": metric_sum(metrics_port, PENDING),
                                             "verdicts": metric_sum(metrics_port, VERDICTS)})
            try:
                _phases(n, kafka, topics, pki.topics[0], {**procs, "devices": devices},
                        sampler, metrics_port, limit_s, phases, ledgers)
            except Incomplete as exc:
                print(f"{exc}; load average {os.getloadavg()[0]:.1f} (2 cores)")
                last = sampler.samples[-1].rss_kb if sampler.samples else {}
                for name in sorted(sampler.peak_kb):
                    print(f"RSS {name:>10}: now {last.get(name, 0) / 1024:.1f} MiB, "
                          f"peak (VmHWM) {sampler.peak_kb[name] / 1024:.1f} MiB")
                return 1
            finally:
                sampler.stop()
                devices.terminate()
        load_end = os.getloadavg()
        verdicts = read_verdicts(kafka, since_ms=int(phases.published * 1000) - 5000)
    pushes = result[0].between(phases.published, float("inf"))
    return _report(n, phases, pushes, verdicts, sampler, ledgers, (load_start, load_end), out)


def _phases(n: int, kafka: KafkaSettings, topics: Topics, topic: str,
            procs: dict[str, ServiceProcess], sampler: Sampler, metrics_port: int,
            limit_s: float, phases: Phases, ledgers: dict[str, CpuLedger]) -> None:
    """Warm-up, registry, request; fills `phases` as it goes, and `ledgers` with the CPU spent
    building the registry and from the request to the last verdict."""
    services = {k: v for k, v in procs.items() if k != "devices"}

    def verdicts_at_least(count: int) -> bool:
        check_alive(procs)
        return metric_sum(metrics_port, VERDICTS) >= count

    # Warm-up: a device of another tenant enrolled, pushed and answered: every client connected.
    produce(kafka, topics.checkins, "CheckinEvent",
            token_updates("warm", topic, [("W0", "f" * 64)]))
    if not wait_registry_count(kafka, 1, services, 300):
        raise SystemExit("warm-up: the fan-out did not enroll one device in 300 s")
    PushPublisher(kafka).publish(PushRequest(tenant="warm", target_all=True))
    if not wait_for(lambda: verdicts_at_least(1), 300, interval_s=0.5):
        raise SystemExit("warm-up: no verdict for the warm-up push in 300 s")
    sampler.start()
    time.sleep(sampler.interval_s * 1.5)
    phases.idle = sampler.sample()

    ledgers["registry"].start()
    phases.registry_start = time.time()
    produce(kafka, topics.checkins, "CheckinEvent",
            token_updates("acme", topic, ((f"E{i}", _token(i)) for i in range(n))))
    phases.registry_produced = time.time()
    print(f"registry: {n:,} TokenUpdates produced in "
          f"{phases.registry_produced - phases.registry_start:.1f} s", flush=True)
    if not wait_registry_count(kafka, n + 1, services, limit_s):
        held = topic_records(kafka, topics.registry) - 1
        took = time.time() - phases.registry_start
        raise Incomplete(f"registry: {held:,} of {n:,} enrollments after {took:.0f} s "
                         f"({held / took:,.0f} check-ins/s; limit {limit_s:.0f} s): MISSED, "
                         f"no request published")
    phases.registry_built = time.time()
    ledgers["registry"].stop()
    print(f"registry: built in {phases.registry_built - phases.registry_start:.1f} s",
          flush=True)
    time.sleep(sampler.interval_s * 1.5)
    phases.baseline = sampler.sample()

    request = PushRequest(tenant="acme", target_all=True)
    phases.request_id = request.request_id
    ledgers["request"].start()
    phases.published = time.time()
    PushPublisher(kafka).publish(request)
    if wait_for(lambda: verdicts_at_least(n + 1), limit_s, interval_s=0.5):
        phases.verdicts_seen = time.time()
    else:
        print(f"!! not every verdict within {limit_s:.0f} s of the request", flush=True)
    ledgers["request"].stop()
    # Keep sampling until every group has caught up (the devices' answers, the verdicts' echo
    # to the correlator), bounded: the drain times are read from these samples.
    wait_for(lambda: bool(sampler.samples) and all(
        v == 0 for v in sampler.samples[-1].lag.values()), 120, interval_s=sampler.interval_s)


def _report(n: int, phases: Phases, pushes: list[float], verdicts: Verdicts, sampler: Sampler,
            ledgers: dict[str, CpuLedger], load: tuple[tuple[float, ...], tuple[float, ...]],
            out: Path | None) -> int:
    samples = sampler.samples
    assert phases.idle is not None and phases.baseline is not None
    registry_s = phases.registry_built - phases.registry_start
    print(f"devices: {n:,}; load average at start {load[0][0]:.1f}, at end {load[1][0]:.1f} "
          f"(2 cores)")
    print(f"registry: {n:,} TokenUpdates produced in "
          f"{phases.registry_produced - phases.registry_start:.1f} s, registry complete "
          f"{registry_s:.1f} s after the first ({n / registry_s:,.0f} check-ins/s)")
    # Issue 12's registry bar (50,000 check-ins/s) asks this of the cores.
    registry = ledgers["registry"]
    print("\n".join(registry.report(n, "check-in")))
    print(f"the 50,000 check-ins/s bar's budget: {registry.cores / 50_000 * 1e6:.0f} us of CPU "
          f"per check-in on {registry.cores} cores, every process included")
    states = verdicts.count(phases.request_id)
    judged = sum(states.values())
    lost = n - judged
    last_verdict = verdicts.last_ms / 1000
    total_s = last_verdict - phases.published if judged else float("inf")
    if pushes:
        first, last = pushes[0] - phases.published, pushes[-1] - phases.published
        print(f"pushes at the simulator: {len(pushes):,} (expected {n:,}); first {first:.2f} s "
              f"after the request, last {last:.1f} s after; {n / last:,.0f} pushes/s request "
              f"to last, {(len(pushes) - 1) / max(last - first, 1e-9):,.0f}/s first to last")
    else:
        print("pushes at the simulator: none")
    by_state = ", ".join(f"{k} {v:,}" for k, v in sorted(states.items()))
    print(f"verdicts: {judged:,} of {n:,} ({by_state}); lost {lost:,}, "
          f"doubled {verdicts.doubled:,}")
    bar = BAR_S_PER_MILLION * n / 1_000_000
    met = lost == 0 and verdicts.doubled == 0 and len(pushes) == n and total_s <= bar
    print(f"request to every verdict: {total_s:.1f} s (last verdict's record timestamp; "
          f"bar <= {bar:.1f} s{'' if n == 1_000_000 else ' = 90 s per 1,000,000 scaled'}): "
          f"{'MET' if met else 'MISSED'}")
    # What the bar asks of the machine: the request-to-verdict window's CPU, held against the
    # cores (at 90 s per 1,000,000 on 2 cores: 180 us of CPU per push for everything).
    request = ledgers["request"]
    print("\n".join(request.report(n, "push")))
    print(f"the bar's budget: {request.cores * bar / n * 1e6:.0f} us of CPU per push on "
          f"{request.cores} cores, every process included")
    for name in sorted(sampler.peak_kb):
        print(f"RSS {name:>10}: idle {phases.idle.rss_kb.get(name, 0) / 1024:7.1f} MiB, registry "
              f"built {phases.baseline.rss_kb.get(name, 0) / 1024:7.1f} MiB, peak (VmHWM) "
              f"{sampler.peak_kb[name] / 1024:7.1f} MiB")
    during = [s for s in samples if s.t >= phases.baseline.t]
    if during:
        most = max(during, key=lambda s: s.probe.get("pending", 0))
        pending = most.probe.get("pending", 0)
        grown = (most.rss_kb["correlator"] - phases.baseline.rss_kb["correlator"]) * 1024
        per = f"{grown / pending:,.0f} bytes" if pending > 0 else "n/a"
        print(f"correlator: at most {pending:,.0f} pushes pending (sampled every "
              f"{sampler.interval_s:.0f} s); RSS growth over the registry-built baseline per "
              f"pending push: {per}")
    request_t = phases.published - sampler.started
    for name in ("fan-out", "sender", "correlator"):
        peak, drained = drain(samples, request_t, name)
        said = (f"{drained:.1f} s after the request" if drained is not None
                else "never, while sampled")
        print(f"lag {name:>10}: peak {peak:,} records, back to 0 {said}")
    if out is not None:
        out.write_text(json.dumps({
            "devices": n, "phases": {k: v for k, v in asdict(phases).items()
                                     if k not in ("idle", "baseline")},
            "pushes": len(pushes), "verdicts": states, "lost": lost,
            "doubled": verdicts.doubled, "request_to_every_verdict_s": total_s,
            "peak_rss_kb": sampler.peak_kb, "load": load,
            "cpu": {name: {"by_role_s": ledger.by_role, "busy_s": ledger.busy_s,
                           "wall_s": ledger.wall_s} for name, ledger in ledgers.items()},
            "samples": [asdict(s) for s in samples]}, indent=1))
    return 0 if met else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--answer-delay-s", type=float, default=5.0,
                        help="a device checks in this long after APNs accepted its push")
    parser.add_argument("--limit-s", type=float, default=1500.0,
                        help="longest wait for the registry, and for the verdicts")
    parser.add_argument("--json", type=Path, help="write the figures and samples here")
    args = parser.parse_args()
    exit_on_sigterm()
    sys.exit(run(args.devices, args.answer_delay_s, args.limit_s, args.json))


if __name__ == "__main__":
    main()
