"""Per-device coalescing: a burst of bulk requests to the same devices through a throttle,
coalescing on against off, in the same run.

Usage: ``.venv/bin/python tests/bench/bench_coalescing.py [--devices N] [--requests K]
[--per-minute R] [--limit-s S]``  (issue 10's form: 10,000 devices, 10 requests, 6,000/min)

Two deployments run side by side on the broker, each the whole pipeline (fan-out, one sender,
correlator as processes; the APNs simulator and a healthy device fleet that checks in 0.5 s after
each push, in this process), each with its own certificate throttled to R bulk pushes a minute
(sender policy). One has MDMPUSH_FANOUT_COALESCE=true, the other false. Once both registries
hold the N devices, K target_all bulk requests are published to each, back to back.

Measured per deployment: pushes sent, counted where they land (the simulator's accepted pushes,
not the sender's outcomes); and the time from the first request's publication until every
(request, device) is accounted for (a terminal outcome per docs/CONTRACTS.md: a coalesced SKIPPED
counts once the correlator closed it with its carrier's verdict). The two share the machine, so
the figures to read are the ratios on / off, not absolute times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.clock import Clock
from services.common.policy import PushPolicy
from services.devstack.pipeline import Pipeline, PipelineSpec
from services.devstack.tracker import OutcomeTracker
from services.sdk.policy import PolicyPublisher
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import KafkaCheckinSink, Scenario, ScenarioSpec, build_scenario
from tests.support.bench_env import bench_kafka


@dataclass
class Run:
    """One deployment of the comparison and what it measured."""

    coalesce: bool
    pipeline: Pipeline
    scenario: Scenario
    tracker: OutcomeTracker
    request_ids: list[str]
    accounted_s: float | None = None
    pushes: int = 0
    coalesced: int = 0

    @property
    def label(self) -> str:
        return "coalescing on " if self.coalesce else "coalescing off"


def start(coalesce: bool, devices: int, per_minute: float, workdir: Path) -> Run:
    """A whole pipeline with `devices` enrolled, its certificate throttled to `per_minute`."""
    kafka = bench_kafka("coalesce-on" if coalesce else "coalesce-off")
    clock = Clock()
    topic = mdm_topic()
    scenario = build_scenario(ScenarioSpec(devices=devices, tenants={"acme": topic}), clock,
                              KafkaCheckinSink(kafka))
    spec = PipelineSpec([topic], env={"fanout": {
        "MDMPUSH_FANOUT_COALESCE": "true" if coalesce else "false"}})
    pipeline = Pipeline(kafka, clock, workdir, spec, scenario.fleet).start()
    assert pipeline.sim is not None
    scenario.fleet.attach(pipeline.sim)
    scenario.fleet.start()
    PolicyPublisher(kafka).set(PushPolicy(topic, bulk_per_minute=per_minute))
    tracker = OutcomeTracker(kafka).start()
    return Run(coalesce, pipeline, scenario, tracker, [])


def enroll(run: Run, limit_s: float) -> None:
    run.scenario.enroll_all(timeout_s=limit_s)
    ids = [t.enrollment_id for t in run.scenario.truth]
    if not run.pipeline.wait_registry(ids, timeout_s=limit_s, interval_s=2.0):
        sys.exit(f"{run.label}: registry incomplete after {limit_s:.0f} s\n{run.pipeline.logs()}")


def burst(run: Run, requests: int) -> float:
    """Publish the burst; returns when the first request was published (monotonic)."""
    publisher = PushPublisher(run.pipeline.kafka)
    began = time.monotonic()
    run.request_ids = [publisher.publish(PushRequest(tenant="acme", target_all=True))
                       for _ in range(requests)]
    return began


def wait_accounted(run: Run, began: float, devices: int, limit_s: float) -> None:
    """Until every (request, device) of `run` is accounted for, or `limit_s` has passed."""
    deadline = began + limit_s
    for rid in run.request_ids:
        if not run.tracker.wait_terminal(rid, devices, max(0.0, deadline - time.monotonic())):
            return
    run.accounted_s = time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--per-minute", type=float, default=6000.0,
                        help="bulk pushes per minute of the certificate (sender policy)")
    parser.add_argument("--limit-s", type=float, default=1800.0,
                        help="longest wait for the burst to be accounted for")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-coalescing-") as tmp:
        runs: list[Run] = []
        try:
            for coalesce in (True, False):
                runs.append(start(coalesce, args.devices, args.per_minute,
                                  Path(tmp) / ("on" if coalesce else "off")))
            for run in runs:
                enroll(run, 600.0)
            began = {id(run): burst(run, args.requests) for run in runs}
            waiters = [threading.Thread(target=wait_accounted,
                                        args=(run, began[id(run)], args.devices, args.limit_s))
                       for run in runs]
            for waiter in waiters:
                waiter.start()
            for waiter in waiters:
                waiter.join()
            time.sleep(2)  # late duplicates, if any, reach the simulator and the tracker
            for run in runs:
                assert run.pipeline.sim is not None
                run.pushes = run.pipeline.sim.snapshot().accepted
                run.coalesced = run.tracker.count(lambda o: o["state"] == "SKIPPED"
                                                  and o["reason"] == "coalesced")
                doubled = sum(len(run.tracker.accounting(r).doubled()) for r in run.request_ids)
                states: dict[str, int] = {}
                for rid in run.request_ids:
                    for outcomes in run.tracker.accounting(rid).terminal.values():
                        states[outcomes[0]["state"]] = states.get(outcomes[0]["state"], 0) + 1
                run.scenario.fleet.stop()
                run.tracker.stop()
                if doubled:
                    print(f"{run.label}: {doubled} (request, device) with two verdicts")
                print(f"{run.label}: pushes at the simulator {run.pushes:,}; coalesced "
                      f"{run.coalesced:,}; accounted for "
                      + (f"in {run.accounted_s:.1f} s" if run.accounted_s is not None
                         else f"NOT within {args.limit_s:.0f} s")
                      + f"; verdicts {dict(sorted(states.items()))}")
        finally:
            for run in runs:
                run.pipeline.stop()
    on, off = runs
    total = args.requests * args.devices
    print(f"{args.requests} requests x {args.devices:,} devices = {total:,} (request, device) "
          f"through {args.per_minute:,.0f}/min; the two deployments ran side by side")
    if off.pushes:
        print(f"pushes on/off: {on.pushes:,} / {off.pushes:,} = {on.pushes / off.pushes:.3f}")
    if on.accounted_s and off.accounted_s:
        print(f"time until accounted on/off: {on.accounted_s:.1f} s / {off.accounted_s:.1f} s "
              f"= {on.accounted_s / off.accounted_s:.3f}")
    return 0 if on.accounted_s is not None and off.accounted_s is not None else 1


if __name__ == "__main__":
    sys.exit(main())
