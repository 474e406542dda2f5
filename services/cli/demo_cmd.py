"""`mdmpush demo`: the whole pipeline on the embedded local stack, on a simulated fleet.

Kafka 2.3.0 starts locally; the APNs simulator and a fleet with every failure cause of Apple's
guidance run in this process; the fan-out, the sender and the correlator run as their own
processes exactly as deployed. One request per tenant goes out; every push is accounted for and
every silent one is diagnosed, then `doctor` explains one device and prints Apple's feedback
bundle for it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from services.common.admin import create_topics
from services.common.catalogue import all_topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from services.devstack.pipeline import Pipeline, PipelineSpec
from services.devstack.scenario_run import run_accuracy
from services.devstack.tracker import OutcomeTracker
from services.doctor.feedback import build_feedback
from services.doctor.history import load_history
from services.doctor.render import feedback_text, history_text
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, KafkaCheckinSink, ScenarioSpec, build_scenario
from services.sim.fleet.fleet import FleetParams

#: Demo-sized timings (production: 10 s re-push window, 5 min deadline).
DEADLINE_MS, REPUSH_MS, RACE_MS = 20_000, 10_000, 8_000


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the local demo on the embedded stack")
    p.add_argument("--devices", type=int, default=300, help="size of the simulated fleet")
    p.add_argument("--keep", action="store_true", help="leave Kafka running afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kafka = LocalKafka()
    t0 = time.monotonic()
    status = kafka.up()
    print(f"[demo] Kafka 2.3.0 ready at {status.bootstrap} in {time.monotonic() - t0:.1f}s")
    settings = KafkaSettings(bootstrap_servers=status.bootstrap,
                             topic_prefix=f"demo{int(time.time())}.")
    create_topics(settings, all_topics(), partitions_override=4)
    try:
        demo(settings, args.devices)
    finally:
        if not args.keep:
            kafka.down()
            print("[demo] Kafka stopped (use --keep to leave it running)")
    return 0


def demo(settings: KafkaSettings, devices: int) -> None:
    clock = Clock()
    tenants = {"acme": mdm_topic(), "globex": mdm_topic()}
    shares = {cause: 0.06 for cause in Cause}
    shares[Cause.HEALTHY] = 0.5
    scenario = build_scenario(ScenarioSpec(devices, tenants, shares, seed=7), clock,
                              KafkaCheckinSink(settings), FleetParams(race_window_ms=RACE_MS))
    env = {"correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": str(DEADLINE_MS),
                          "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(REPUSH_MS),
                          "MDMPUSH_CORRELATOR_RACE_ENROLLMENT_MS": str(REPUSH_MS)}}
    print(f"[demo] fleet: {devices} devices of 2 tenants; causes: "
          + ", ".join(f"{c.value} {n}" for c, n in sorted(
              Counter(d.cause for d in scenario.devices).items(), key=lambda i: i[0].value)))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = Pipeline(settings, clock, Path(tmp), PipelineSpec(
            sorted(tenants.values()), env=env), scenario.fleet)
        with pipeline, OutcomeTracker(settings) as tracker:
            assert pipeline.sim is not None
            print(f"[demo] APNs simulator at {pipeline.sim.url}; fanout, sender and correlator "
                  f"started as processes (topic prefix {settings.topic_prefix})")
            scenario.fleet.attach(pipeline.sim)
            with scenario.fleet:
                print(f"[demo] devices enroll; requests published; waiting for every verdict "
                      f"(deadline {DEADLINE_MS // 1000}s after each push)")
                result = run_accuracy(pipeline, scenario, tracker, timeout_s=300,
                                      progress=ProgressBar())
                print()
            outcomes, alerts = tracker.snapshot()
    _summary(outcomes, alerts, result.request_ids)
    print("[demo] verdicts against the simulated truth:")
    print(result.confusion.render())
    print(f"[demo] {100 * result.confusion.accuracy():.1f} % right; "
          f"{len(result.missing)} push(es) unaccounted for")
    stale = next(t for t in scenario.truth if t.cause is Cause.STALE_MAGIC)
    history = load_history(settings, stale.enrollment_id)
    print(f"\n[demo] mdmpush doctor device {stale.enrollment_id}")
    print(history_text(history))
    print(f"\n[demo] mdmpush doctor feedback {stale.enrollment_id}")
    print(feedback_text(build_feedback(history)))


class ProgressBar:
    """A one-line bar redrawn only when the count moves."""

    def __init__(self) -> None:
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if done == self.last:
            return
        self.last = done
        filled = int(30 * done / max(total, 1))
        sys.stdout.write(f"\r[demo] [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} verdicts")
        sys.stdout.flush()


def _summary(outcomes: list[dict[str, Any]], alerts: list[dict[str, Any]],
             request_ids: list[str]) -> None:
    mine = [o for o in outcomes if o["request_id"] in request_ids and o["repush"] == 0]
    attempts = Counter((o["state"], o.get("reason") or "") for o in mine)
    print("[demo] outcomes (first pushes; a target may pass through SENT/RETRYING first):")
    for (state, reason), n in sorted(attempts.items()):
        print(f"         {state:14} {reason:22} {n}")
    print("[demo] alerts by diagnosis: " + ", ".join(
        f"{d.lower()} {n}" for d, n in sorted(Counter(a["diagnosis"] for a in alerts).items())))
    if alerts:
        a = alerts[0]
        print(f"[demo] e.g. {a['enrollment_id']}: {a['diagnosis'].lower()}, evidence "
              f"{a['evidence']}, action: {a['action'] or 'none'}")
