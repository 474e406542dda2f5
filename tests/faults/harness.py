"""One fault case on the whole pipeline: a steady stream of push requests, a fault in the middle
of it, and the three figures the proof is about.

- **lost**: targets of an accepted request without a terminal verdict once the run settles
  (services/common/accounting.py), and targets with more than one verdict (``doubled``);
- **duplicate pushes**, counted where they would annoy a user, at the APNs simulator: for each
  device token, the 200s it received minus the distinct jobs the sender reported SENT to it (a
  job pushed twice counts once there, twice here);
- **recovery time**: from the end of the fault (the kill, SIGCONT, the restart or the end of an
  APNs storm) until the backlog it left is gone: the simulator has received as many pushes, and
  the verdicts written are as many, as there were targets in the requests accepted before the
  fault ended (0 when nothing was behind then).

Each request targets its own slice of the fleet, so a device is pushed once per run unless
something repeats it. A :class:`Supervisor` plays Kubernetes: a service process that exits is
started again (and counted), nothing else is done for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.common.accounting import TERMINAL_STATES
from services.common.kafka.producer import DeliveryError
from services.devstack.pipeline import Pipeline
from services.devstack.service_process import ServiceProcess
from services.devstack.tracker import OutcomeTracker
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.fleet import Scenario

#: Per fault: duplicate pushes at most this share of the targets.
DUPLICATE_BAR = 0.01
#: Longest wait for the fan-out's registry before the stream starts (set-up, not measured).
REGISTRY_WAIT_S = 360.0
#: Where every case appends its figures (one JSON line each) for figures.md and the plots.
RESULTS_ENV = "MDMPUSH_FAULTS_RESULTS"

Submit = Callable[[list[str]], str]


@dataclass
class Workload:
    """Requests of ``wave`` devices each, one every ``interval_s``; each slice of the fleet
    is requested ``copies`` times in a row (priority requests then: bulk ones would coalesce)."""

    wave: int = 40
    interval_s: float = 0.2
    copies: int = 1

    def slices(self, ids: list[str]) -> list[list[str]]:
        return [ids[i:i + self.wave] for i in range(0, len(ids), self.wave)
                for _ in range(self.copies)]


@dataclass
class Sample:
    t: float
    arrivals: int
    verdicts: int


@dataclass
class FaultResult:
    name: str
    targets: int
    lost: int
    doubled: int
    duplicate_pushes: int
    recovery_s: float
    restarts: dict[str, int]
    resubmitted: int
    not_answered: int
    fault_at_s: float
    fault_end_s: float
    settled_s: float
    timeline: list[Sample] = field(default_factory=list)
    #: Poison records the fault wrote (record faults), and those a service should have
    #: dead-lettered but did not: lost as surely as a target without a verdict.
    poison: int = 0
    poison_lost: list[str] = field(default_factory=list)
    #: Whether a service may exit by itself in this case: only while Kafka is gone for longer
    #: than a service waits for its acknowledgements (it then exits for its pod to restart).
    restarts_allowed: bool = False

    @property
    def duplicate_share(self) -> float:
        return self.duplicate_pushes / self.targets if self.targets else 0.0

    @property
    def met(self) -> bool:
        return (self.lost == 0 and self.doubled == 0 and self.duplicate_share <= DUPLICATE_BAR
                and not self.poison_lost and (self.restarts_allowed or not self.restarts))

    def line(self) -> str:
        recovery = f"{self.recovery_s:.1f} s"
        return (f"{self.name}: {self.targets} targets, lost {self.lost}, doubled verdicts "
                f"{self.doubled}, duplicate pushes {self.duplicate_pushes} "
                f"({self.duplicate_share:.2%}), recovery {recovery}, unplanned restarts "
                f"{sum(self.restarts.values())} {self.restarts or ''}, requests resubmitted "
                f"{self.resubmitted}, not ANSWERED {self.not_answered}"
                + (f", poison dead-lettered {self.poison - len(self.poison_lost)} of "
                   f"{self.poison} {self.poison_lost or ''}" if self.poison else "") + " — "
                f"{'met' if self.met else 'MISSED'}")

    def record(self) -> None:
        """Append this result to the file named by MDMPUSH_FAULTS_RESULTS, if set."""
        path = os.environ.get(RESULTS_ENV)
        if not path:
            return
        doc: dict[str, Any] = asdict(self)
        doc["duplicate_share"] = self.duplicate_share
        doc["met"] = self.met
        doc["commit"] = code_version()
        doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with Path(path).open("a") as out:
            out.write(json.dumps(doc) + "\n")


def code_version() -> str:
    """The commit the services ran (they start from the working tree), with "+dirty" when the
    tree differed from it: a repeated run names the code each of its cases met."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "services") else "")


class Supervisor:
    """Starts again any watched service process that has exited, as Kubernetes would; a
    process the case stopped on purpose (SIGSTOP) is alive and left alone. Restarts the case
    did not cause (:meth:`planned`) are counted: a service that gave up by itself."""

    def __init__(self, processes: Callable[[], list[ServiceProcess]]) -> None:
        self._processes = processes
        self.restarts: Counter[str] = Counter()
        self._planned: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def planned(self, name: str) -> None:
        """The case is about to kill this process: its restart is not unplanned."""
        self._planned[name] += 1

    @property
    def unplanned(self) -> dict[str, int]:
        return {k: n for k, n in (self.restarts - self._planned).items() if n > 0}

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for proc in self._processes():
                if proc.pid is not None and not proc.alive:
                    self.restarts[proc.name] += 1
                    proc.start()


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP for the block, SIGCONT however it ends."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def kafka_submit(pipeline: Pipeline, tenant: str, initiator: str = "admin") -> Submit:
    publisher = PushPublisher(pipeline.kafka)

    def submit(ids: list[str]) -> str:
        return publisher.publish(PushRequest(tenant=tenant, enrollment_ids=ids,
                                             initiator=initiator))  # type: ignore[arg-type]
    return submit


class Stream:
    """Publishes the workload's requests from a thread; a refused publish is tried again, as a
    client would (counted: a request that did land then is pushed twice, and that shows)."""

    def __init__(self, submit: Submit, slices: list[list[str]], interval_s: float) -> None:
        self._submit = submit
        self._slices = slices
        self._interval_s = interval_s
        self.accepted: dict[str, list[str]] = {}
        #: (monotonic time, targets accepted so far), one per accepted request.
        self.progress: list[tuple[float, int]] = []
        self.resubmitted = 0
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return self.done.is_set()

    def _run(self) -> None:
        for ids in self._slices:
            while True:
                try:
                    request_id = self._submit(ids)
                    break
                except (DeliveryError, OSError, httpx.HTTPError) as exc:  # broker/gateway down
                    self.resubmitted += 1
                    print(f"resubmitting a request: {exc}")
                    time.sleep(0.5)
            self.accepted[request_id] = ids
            total = (self.progress[-1][1] if self.progress else 0) + len(ids)
            self.progress.append((time.monotonic(), total))
            time.sleep(self._interval_s)
        self.done.set()


class Sampler:
    """Pushes accepted by the simulator and verdicts written, every 0.1 s; the clock and the
    supervisor of the run, for the fault to use."""

    def __init__(self, pipeline: Pipeline, tracker: OutcomeTracker, supervisor: Supervisor
                 ) -> None:
        self._pipeline = pipeline
        self._tracker = tracker
        self.supervisor = supervisor
        self.t0 = time.monotonic()
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _run(self) -> None:
        sim = self._pipeline.sim
        assert sim is not None
        while not self._stop.wait(0.1):
            arrivals = sum(sim.snapshot().by_token.values())
            verdicts = self._tracker.count(
                lambda o: o["state"] in TERMINAL_STATES and not o.get("repush"))
            self.samples.append(Sample(round(self.now(), 2), arrivals, verdicts))


def recovery(samples: list[Sample], end_s: float, behind: int) -> float:
    """Seconds from `end_s` until both the pushes and the verdicts reached `behind` (the
    targets accepted before the fault ended); inf if they never did."""
    cleared = next((s.t for s in samples
                    if s.t >= end_s and s.arrivals >= behind and s.verdicts >= behind), None)
    return float("inf") if cleared is None else max(0.0, cleared - end_s)


def duplicate_pushes(pipeline: Pipeline, tracker: OutcomeTracker) -> int:
    """200s at the simulator beyond one per distinct job the sender reported SENT."""
    assert pipeline.sim is not None
    arrivals = pipeline.sim.snapshot().by_token
    outcomes, _ = tracker.snapshot()
    sent: dict[str, set[str]] = {}
    for o in outcomes:
        if o["state"] == "SENT":
            sent.setdefault(o["token_hex"], set()).add(o["job_id"])
    return sum(max(0, n - len(sent.get(token, ()))) for token, n in arrivals.items())


def run_case(
    name: str,
    pipeline: Pipeline,
    scenario: Scenario,
    tracker: OutcomeTracker,
    fault: Callable[[Sampler], float],
    *,
    fault_at: float = 0.3,
    workload: Workload | None = None,
    submit: Submit | None = None,
    extra_processes: Callable[[], list[ServiceProcess]] = list,
    settle_s: float = 240.0,
    poison: Callable[[], tuple[int, list[str]]] | None = None,
    restarts_allowed: bool = False,
) -> FaultResult:
    """Enroll the fleet, stream the requests, call ``fault(sampler)`` once ``fault_at`` of the
    requests are out (it injects the fault, heals it and returns the sampler time it ended),
    then wait until every target of every accepted request has a verdict or ``settle_s`` ran
    out. ``poison``, for a fault that wrote poison records, says how many it expects set aside
    and which were not (waiting for them first)."""
    workload = workload or Workload()
    scenario.enroll_all()
    ids = sorted(t.enrollment_id for t in scenario.truth)
    # A ceiling, not a figure: the fan-out's registry build took over 120 s on the shared 2-core
    # machine while other suites loaded the broker.
    assert pipeline.wait_registry(ids, timeout_s=REGISTRY_WAIT_S), pipeline.logs()
    tenant = scenario.truth[0].tenant
    slices = workload.slices(ids)

    def processes() -> list[ServiceProcess]:
        listed = [pipeline.fanout, *pipeline.senders, pipeline.correlator, *extra_processes()]
        return [p for p in listed if p is not None]

    with Supervisor(processes) as supervisor, Sampler(pipeline, tracker, supervisor) as sampler:
        initiator = "user" if workload.copies > 1 else "admin"
        stream = Stream(submit or kafka_submit(pipeline, tenant, initiator), slices,
                        workload.interval_s).start()
        while len(stream.accepted) < len(slices) * fault_at and not stream.done.is_set():
            time.sleep(0.05)
        fault_at_s = sampler.now()
        fault_end_s = fault(sampler)
        assert stream.join(settle_s), "the requests could not all be published"
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and _missing(tracker, stream.accepted):
            time.sleep(0.5)
        settled_s = sampler.now()
        time.sleep(1.0)  # a late duplicate or second verdict still shows
    missing = _missing(tracker, stream.accepted)
    poison_written, poison_lost = poison() if poison is not None else (0, [])
    doubled = 0
    not_answered = 0
    for request_id in stream.accepted:
        acc = tracker.accounting(request_id)
        doubled += len(acc.doubled())
        not_answered += sum(1 for v in acc.terminal.values() if v[0]["state"] != "ANSWERED")
    targets = sum(len(v) for v in stream.accepted.values())
    end_mono = sampler.t0 + fault_end_s
    behind = max((n for t, n in stream.progress if t <= end_mono), default=0)
    result = FaultResult(
        name=name, targets=targets, lost=missing, doubled=doubled,
        duplicate_pushes=duplicate_pushes(pipeline, tracker),
        recovery_s=recovery(sampler.samples, fault_end_s, behind),
        restarts=supervisor.unplanned, resubmitted=stream.resubmitted,
        not_answered=not_answered, fault_at_s=round(fault_at_s, 2),
        fault_end_s=round(fault_end_s, 2), settled_s=round(settled_s, 2),
        timeline=sampler.samples, poison=poison_written, poison_lost=poison_lost,
        restarts_allowed=restarts_allowed,
    )
    print(result.line())
    result.record()
    return result


def _missing(tracker: OutcomeTracker, accepted: dict[str, list[str]]) -> int:
    return sum(len(tracker.accounting(r).missing(ids)) for r, ids in accepted.items())


def assert_met(result: FaultResult, pipeline: Pipeline) -> None:
    """The bars: nothing lost or doubled, duplicates within the bar, every service running.

    A service that exits by itself fails the case, except where the fault is Kafka being gone
    for longer than a service waits for its acknowledgements (`result.restarts_allowed`): it
    then exits for its pod to be restarted, which the figures count."""
    assert result.lost == 0, (result.line(), pipeline.logs())
    assert result.doubled == 0, result.line()
    assert result.duplicate_share <= DUPLICATE_BAR, result.line()
    assert not result.poison_lost, (result.line(), pipeline.logs())
    assert result.recovery_s != float("inf"), (result.line(), pipeline.logs())
    assert result.restarts_allowed or not result.restarts, (result.line(), pipeline.logs())
    for proc in [pipeline.fanout, *pipeline.senders, pipeline.correlator]:
        assert proc is None or proc.alive, (proc.name, pipeline.logs())
