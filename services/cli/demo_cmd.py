"""`mdmpush demo`: the whole pipeline on the embedded local stack, on a simulated fleet.

Kafka 2.3.0 starts locally; the APNs simulator and a fleet with every failure cause of Apple's
guidance run in this process; the fan-out, the sender and the correlator run as their own
processes exactly as deployed. In order:
- the push certificates the sender holds (`mdmpush certs list`);
- one request per tenant: every push accounted for, every silent one diagnosed;
- a burst of requests to the same devices: the pushes sent against the requests, the rest
  coalesced onto the outstanding push, every (request, device) accounted for;
- one request of the burst followed live (`mdmpush follow`), then its summary;
- silent-device care on demo-sized timings: the silent enrollments re-armed, those that
  answered, those marked inactive;
- `doctor` explains one device and prints Apple's feedback bundle for it.
Every number is read back from the topics the services write (outcomes, verdicts, activity,
check-ins), never taken from what the demo asked for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cli import certs_cmd
from services.cli.follow_cmd import status_line, summary
from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.clock import Clock
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from services.devstack.pipeline import Pipeline, PipelineSpec
from services.devstack.procs import wait_for
from services.devstack.scenario_run import run_accuracy
from services.devstack.tracker import OutcomeTracker
from services.doctor.feedback import build_feedback
from services.doctor.history import load_history
from services.doctor.render import feedback_text, history_text
from services.sdk.publisher import PushPublisher, PushRequest
from services.sdk.track import Progress, track
from services.sim.apns.certs import mdm_topic
from services.sim.fleet import Cause, KafkaCheckinSink, Scenario, ScenarioSpec, build_scenario
from services.sim.fleet.fleet import FleetParams

#: Demo-sized timings (production: 10 s re-push window, 5 min deadline).
DEADLINE_MS, REPUSH_MS, RACE_MS = 20_000, 10_000, 8_000
#: Demo-sized fleet care (production: re-arm after 24 h spread over 6 h, inactive after 7 days).
#: A re-arm comes 45 s after enrolling, a verdict 20 s after the push: as long as the first
#: pushes leave within 25 s of enrolling (17 s at worst seen on the loaded 2-core machine), every
#: verdict of the accuracy run is given before any re-arm: it is judged as without care.
REARM_AFTER_MS, REARM_SPREAD_MS, INACTIVE_AFTER_MS = 45_000, 2_000, 60_000
#: How much older a stale-magic device's duplicate enrollment is (the fleet's default, an hour,
#: would make it INACTIVE before the first request on these timings).
STALE_ENROLLMENT_AGE_MS = 5_000
#: Requests of the coalesced burst, all to the same devices.
BURST = 5


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
                              KafkaCheckinSink(settings),
                              FleetParams(race_window_ms=RACE_MS,
                                          stale_enrollment_age_ms=STALE_ENROLLMENT_AGE_MS))
    env = {"correlator": {"MDMPUSH_CORRELATOR_DEADLINE_MS": str(DEADLINE_MS),
                          "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(REPUSH_MS),
                          "MDMPUSH_CORRELATOR_RACE_ENROLLMENT_MS": str(REPUSH_MS),
                          "MDMPUSH_CORRELATOR_REARM_AFTER_MS": str(REARM_AFTER_MS),
                          "MDMPUSH_CORRELATOR_REARM_SPREAD_MS": str(REARM_SPREAD_MS),
                          "MDMPUSH_CORRELATOR_INACTIVE_AFTER_MS": str(INACTIVE_AFTER_MS)},
           # As deployed (one config map): the coalescing window is the correlator's deadline.
           "fanout": {"MDMPUSH_CORRELATOR_DEADLINE_MS": str(DEADLINE_MS)}}
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
            _certificates(pipeline.workdir / "certs")
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
                burst = _publish_burst(settings, scenario)
                _follow(settings, burst.request_ids[0], burst.since_ms)
                _account_burst(burst, tracker)
                _care(settings, scenario, tracker, burst)
    stale = next(t for t in scenario.truth if t.cause is Cause.STALE_MAGIC)
    history = load_history(settings, stale.enrollment_id)
    print(f"\n[demo] mdmpush doctor device {stale.enrollment_id}")
    print(history_text(history))
    print(f"\n[demo] mdmpush doctor feedback {stale.enrollment_id}")
    print(feedback_text(build_feedback(history)))


def _certificates(cert_dir: Path) -> None:
    """What `mdmpush certs list DIR` prints for the directory the sender reads."""
    print(f"[demo] mdmpush certs list {cert_dir}")
    certs_cmd.run(argparse.Namespace(directory=cert_dir, enrollments=False))


@dataclass(frozen=True)
class Burst:
    """The burst's requests, their common targets, and where to look for them."""

    request_ids: list[str]
    targets: list[str]
    #: Wall-clock ms just before the first request was published (where `follow` looks).
    since_ms: int


def _publish_burst(settings: KafkaSettings, scenario: Scenario) -> Burst:
    """BURST bulk requests to the same healthy devices, back to back."""
    targets = sorted(t.enrollment_id for t in scenario.truth
                     if t.cause is Cause.HEALTHY and t.tenant == "acme")
    since_ms = int(time.time() * 1000)
    publisher = PushPublisher(settings)
    request_ids = [publisher.publish(PushRequest(
        tenant="acme", initiator="admin", command_type="install_profile",
        enrollment_ids=targets)) for _ in range(BURST)]
    print(f"\n[demo] coalesced burst: {BURST} bulk requests to the same {len(targets)} acme "
          f"devices, published back to back")
    return Burst(request_ids, targets, since_ms)


def _account_burst(burst: Burst, tracker: OutcomeTracker) -> None:
    """From the outcomes: the pushes APNs accepted against the (request, device) pairs, the
    coalesced rest, and every pair's terminal state."""
    for request_id in burst.request_ids:
        tracker.wait_terminal(request_id, len(burst.targets), timeout_s=120)
    outcomes, _ = tracker.snapshot()
    mine = [o for o in outcomes if o["request_id"] in burst.request_ids and o["repush"] == 0]
    sent = {o["job_id"] for o in mine if o["state"] == "SENT"}
    coalesced = {o["job_id"] for o in mine
                 if o["state"] == "SKIPPED" and o.get("reason") == "coalesced"}
    verdicts: Counter[str] = Counter()
    for request_id in burst.request_ids:
        for final in tracker.accounting(request_id).terminal.values():
            verdicts[final[0]["state"]] += 1
    pairs = len(burst.request_ids) * len(burst.targets)
    print(f"[demo] coalesced burst: {pairs} (request, device) pairs: pushes sent {len(sent)}, "
          f"SKIPPED coalesced {len(coalesced)}, accounted for {sum(verdicts.values())}/{pairs} ("
          + ", ".join(f"{state} {n}" for state, n in sorted(verdicts.items())) + ")")
    for n, request_id in enumerate(burst.request_ids, 1):
        jobs = {o["job_id"] for o in mine if o["request_id"] == request_id}
        print(f"         request {n} {request_id}: pushed {len(jobs & sent)}, rode on a push "
              f"{len(jobs & coalesced)}")


def _follow(settings: KafkaSettings, request_id: str, since_ms: int) -> None:
    """`mdmpush follow REQUEST_ID` while the burst is under way: its live lines, then its
    summary."""
    print(f"[demo] mdmpush follow {request_id}")
    last: Progress | None = None
    for progress in track(request_id, settings=settings, since_ms=since_ms, interval_s=0.5,
                          timeout_s=120):
        print(f"         {status_line(progress)}")
        last = progress
    if last is not None:
        print(summary(last))


@dataclass(frozen=True)
class CareCounts:
    """Fleet care as the topics show it: enrollment ids in each group."""

    #: Enrollment -> the latest time APNs accepted a re-arm push for it (outcomes topic).
    rearmed_at: dict[str, int]
    #: Re-arm jobs by their outcome (SENT once APNs accepted it, else the last state).
    rearm_states: Counter[str]
    #: Re-armed enrollments that checked in after their re-arm (check-ins topic).
    answered: set[str]
    #: Enrollments whose latest activity record is INACTIVE (activity topic).
    inactive: set[str]
    #: Enrollments the correlator re-armed (whatever became of the push) or marked INACTIVE.
    silent: set[str]


def _care_counts(settings: KafkaSettings, outcomes: list[dict[str, Any]]) -> CareCounts:
    """Read the activity and check-ins topics; `outcomes` holds the re-arm pushes' outcomes."""
    serde = AvroSerde()
    topics = Topics(settings.topic_prefix)
    latest = {}
    for msg in read_to_end(settings, topics.activity, timeout_s=30, name="demo-activity"):
        record = serde.decode_as(msg.value(), "EnrollmentActivity")
        latest[record["enrollment_id"]] = record
    rearm_jobs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        if o["request_id"].startswith("rearm-"):
            rearm_jobs[o["job_id"]].append(o)
    rearmed_at: dict[str, int] = {}
    for o in (o for attempts in rearm_jobs.values() for o in attempts if o["state"] == "SENT"):
        rearmed_at[o["enrollment_id"]] = max(rearmed_at.get(o["enrollment_id"], 0), o["at"])
    answered = set()
    for msg in read_to_end(settings, topics.checkins, timeout_s=30, name="demo-checkins"):
        checkin = serde.decode_as(msg.value(), "CheckinEvent")
        after = rearmed_at.get(checkin["enrollment_id"])
        if after is not None and checkin["occurred_at"] > after:
            answered.add(checkin["enrollment_id"])
    inactive = {e for e, r in latest.items() if r["state"] == "INACTIVE"}
    return CareCounts(rearmed_at, Counter(_final_state(a) for a in rearm_jobs.values()),
                      answered, inactive,
                      inactive | {a[0]["enrollment_id"] for a in rearm_jobs.values()})


def _care(settings: KafkaSettings, scenario: Scenario, tracker: OutcomeTracker,
          burst: Burst) -> None:
    """Wait (bounded) until the simulated truth says everything is due: every offline device
    INACTIVE, every healthy one outside the burst (silent since the first requests) answered
    its re-arm; then print what the topics say."""
    print(f"\n[demo] silent-device care: one re-arm push after {REARM_AFTER_MS // 1000}s of "
          f"silence (spread over {REARM_SPREAD_MS // 1000}s), inactive after "
          f"{INACTIVE_AFTER_MS // 1000}s (demo timings; production: 24 h and 7 days)")
    offline = {t.enrollment_id for t in scenario.truth if t.cause is Cause.OFFLINE}
    quiet = {t.enrollment_id for t in scenario.truth
             if t.cause is Cause.HEALTHY} - set(burst.targets)

    def due() -> bool:
        counts = _care_counts(settings, tracker.snapshot()[0])
        return offline <= counts.inactive and quiet <= counts.answered

    wait_for(due, (INACTIVE_AFTER_MS + REARM_SPREAD_MS) / 1000 + 60, interval_s=1.0)
    counts = _care_counts(settings, tracker.snapshot()[0])
    cause = {e: t.cause.value for t in scenario.truth
             for e in (t.enrollment_id, t.current_enrollment_id)}
    print(f"[demo] silent-device care: silent past rearm_after {len(counts.silent)}, re-armed "
          f"{len(counts.rearmed_at)}, answered after re-arm {len(counts.answered)}, inactive "
          f"{len(counts.inactive)}")
    print("         re-arm pushes by outcome: "
          + ", ".join(f"{state} {n}" for state, n in sorted(counts.rearm_states.items())))
    for name, group in (("answered after re-arm", counts.answered),
                        ("inactive", counts.inactive)):
        print(f"         {name} by simulated cause: " + ", ".join(
            f"{c} {n}" for c, n in sorted(Counter(cause.get(e, "?") for e in group).items())))


def _final_state(attempts: list[dict[str, Any]]) -> str:
    """A job's outcome: SENT once APNs accepted it, else its last state."""
    if any(o["state"] == "SENT" for o in attempts):
        return "SENT"
    return max(attempts, key=lambda o: o["at"])["state"]


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
    # The requests' own alerts: a re-arm push that fails later is alerted on too.
    alerts = [a for a in alerts if a["request_id"] in request_ids]
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
