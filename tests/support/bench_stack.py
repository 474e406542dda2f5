"""The pipeline's services as processes against a simulator that runs in a process of its own,
for benchmarks that count pushes where they land (``tests/bench/sim_arrivals.py``).

``services.devstack.pipeline.Pipeline`` keeps the simulator on a thread of the calling process,
which then shares its GIL with whatever the benchmark does; here the benchmark process only
produces, publishes and waits. What the benchmarks read off the running stack lives here too:
records per topic, a consumer group's lag, each process's resident memory (``Sampler``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.common.accounting import is_terminal
from services.common.catalogue import Topics
from services.common.errors import DecodeError
from services.common.kafka import make_producer
from services.common.kafka.logs import client_logger
from services.common.kafka.reader import read_to_end
from services.common.registry_view import load_registry
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.procs import wait_for
from services.devstack.service_process import ServiceProcess
from tests.support.sender_harness import Pki, sender_settings, settings_env

SERDE = AvroSerde()


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. `timeout` in scripts/bench-all.sh) exits through the benchmark's `finally`
    blocks and context managers, so the services and the simulator it started are stopped too
    (Python's default for SIGTERM is to die on the spot and leave them running)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def service_env(kafka: KafkaSettings, directory: Path) -> dict[str, str]:
    """What the fan-out and the correlator need: the broker, the deployment's prefix, no ports."""
    prefix = kafka.topic_prefix
    return {
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": prefix,
        "MDMPUSH_CORRELATOR_GROUP_ID": f"{prefix}correlator",
        "MDMPUSH_CORRELATOR_METRICS_PORT": "0",
        "MDMPUSH_FANOUT_DATA_DIR": str(directory / "fanout"),
        "MDMPUSH_FANOUT_METRICS_PORT": "0",
    }


#: The consumer group of each service `stack` starts, by process name (for `group_lag`).
SENDER_GROUP_ENV = "MDMPUSH_SENDER_GROUP_ID"


def lag_groups(kafka: KafkaSettings, procs: dict[str, ServiceProcess]
               ) -> dict[str, list[tuple[str, list[str]]]]:
    """Process name -> the (consumer group, topics) whose lag says how far behind it is: the
    fan-out's faust app (requests) and its check-in reader (`<app>-checkins`), the sender's jobs
    group, the correlator's outcomes group (its check-ins are replayed by assignment: no group
    offsets to compare with)."""
    topics = Topics(kafka.topic_prefix)
    app = f"{kafka.topic_prefix}mdmpush-fanout"
    found = {"fan-out": [(app, [topics.requests]), (f"{app}-checkins", [topics.checkins])],
             "correlator": [(f"{kafka.topic_prefix}correlator", [topics.outcomes])]}
    if "sender" in procs:
        found["sender"] = [(procs["sender"].env[SENDER_GROUP_ENV],
                            [topics.jobs_bulk, topics.jobs_priority])]
    return {name: found[name] for name in found if name in procs}


def service_lag(kafka: KafkaSettings, procs: dict[str, ServiceProcess], name: str,
                topic: str | None = None) -> int:
    """Records the service `name` has not committed yet (of `topic` only, if given)."""
    return sum(group_lag(kafka, group, [t for t in topics if topic in (None, t)])
               for group, topics in lag_groups(kafka, procs)[name]
               if topic is None or topic in topics)


@contextmanager
def stack(kafka: KafkaSettings, directory: Path, pki: Pki, sim_port: int, *,
          fanout: bool, correlator: bool, partitions: int,
          fanout_env: dict[str, str] | None = None,
          correlator_env: dict[str, str] | None = None,
          **sender: object) -> Iterator[dict[str, ServiceProcess]]:
    """One sender (and the fan-out, the correlator if asked) as processes for the block.

    The correlator runs without re-pushes within the block's time (no silent re-push, a race
    window of an hour): with no devices behind the simulator nothing ever answers, and its
    re-pushes would be counted as the benchmark's pushes. `fanout_env` / `correlator_env` add
    or override their `MDMPUSH_*` settings (bounds, metrics ports)."""
    env = service_env(kafka, directory)
    env["MDMPUSH_FANOUT_PARTITIONS"] = str(partitions)
    settings = sender_settings(pki, f"https://127.0.0.1:{sim_port}", **sender)
    procs = {"sender": ServiceProcess("sender", "services.sender",
                                      {**env, **settings_env(settings, kafka)},
                                      directory / "logs")}
    if fanout:
        procs["fan-out"] = ServiceProcess("fan-out", "services.fanout",
                                          {**env, **(fanout_env or {})}, directory / "logs")
    if correlator:
        quiet = {"MDMPUSH_CORRELATOR_REPUSH_SILENT": "false",
                 "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(3_600_000)}
        procs["correlator"] = ServiceProcess(
            "correlator", "services.correlator", {**env, **quiet, **(correlator_env or {})},
            directory / "logs")
    with ExitStack() as stop:
        for proc in procs.values():
            proc.start()
            stop.callback(proc.terminate)
        yield procs


def produce(kafka: KafkaSettings, topic: str, schema: str,
            records: Iterable[tuple[str, dict[str, object]]]) -> None:
    """Produce and flush; raises unless every record was acknowledged."""
    producer = make_producer(kafka)
    failed: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for key, record in records:
        while True:
            try:
                producer.produce(topic, SERDE.encode(schema, record), key=key,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise SystemExit(f"{topic}: {len(failed)} records refused: {failed[:3]}")


def token_updates(tenant: str, topic: str, ids: Iterable[tuple[str, str]]
                  ) -> Iterator[tuple[str, dict[str, object]]]:
    """A TokenUpdate check-in per (enrollment id, token hex), as the registry is built from."""
    now = int(time.time() * 1000)
    for enrollment_id, token in ids:
        yield enrollment_id, {
            "event_id": f"ev-{enrollment_id}", "enrollment_id": enrollment_id, "tenant": tenant,
            "message_type": "TOKEN_UPDATE", "udid": enrollment_id, "topic": topic,
            "token_hex": token, "push_magic": f"m-{enrollment_id}", "occurred_at": now}


def checkin(tenant: str | None, enrollment_id: str, message_type: str, *,
            status: str | None = None) -> dict[str, object]:
    """A check-in record of `message_type` (an Authenticate, a command report...) without a
    token; `tenant` None writes an empty one (which the services refuse)."""
    return {
        "event_id": f"ev-{enrollment_id}-{time.time_ns()}", "enrollment_id": enrollment_id,
        "tenant": tenant or "", "message_type": message_type, "udid": enrollment_id,
        "status": status, "occurred_at": int(time.time() * 1000)}


def topic_records(kafka: KafkaSettings, topic: str) -> int:
    """How many records `topic` holds (sum of its partitions' end offsets)."""
    consumer = Consumer(kafka.consumer_config(f"count-{time.time_ns()}"),
                        logger=client_logger("bench"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        consumer.close()


def group_lag(kafka: KafkaSettings, group: str, topics: Iterable[str]) -> int:
    """Records of `topics` that `group` has not committed yet (a partition it never committed
    counts from its start), i.e. how far behind the group's consumers are."""
    consumer = Consumer(kafka.consumer_config(group), logger=client_logger("bench"))
    try:
        parts = [TopicPartition(topic, p) for topic in topics
                 for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
        lag = 0
        for tp in consumer.committed(parts, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        consumer.close()  # never subscribed: it leaves the group as it found it


def rss_kb(pid: int | None) -> tuple[int, int]:
    """(resident, peak resident) KiB of a process from /proc (0, 0 if it is gone)."""
    if pid is None:
        return 0, 0
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    except (OSError, ValueError):
        return 0, 0
    return values["VmRSS"], values["VmHWM"]


def metric_sum(port: int, name: str) -> float:
    """The sum of every series of metric `name` on a service's /metrics (0 if it has none yet;
    -1 if the endpoint does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Sample:
    """One look at the stack: seconds since the sampler started, RSS (KiB) and lag per name,
    and whatever the sampler's `probe` read (a service's gauges)."""

    t: float
    rss_kb: dict[str, int]
    lag: dict[str, int]
    probe: dict[str, float]


@dataclass
class Sampler:
    """Every `interval_s` on a thread: each process's RSS and each service's consumer lag.

    The processes are looked up at each sample, so a restarted service (new pid) is followed;
    the peak per name is the largest VmHWM seen (the kernel's own high-water mark between
    samples)."""

    kafka: KafkaSettings
    procs: dict[str, ServiceProcess]
    interval_s: float = 5.0
    probe: Callable[[], dict[str, float]] | None = None
    samples: list[Sample] = field(default_factory=list)
    peak_kb: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    #: Epoch seconds of the sampler's start (a sample's `t` counts from here).
    started: float = field(default_factory=time.time)
    _started: float = field(default_factory=time.monotonic)

    def sample(self) -> Sample:
        rss: dict[str, int] = {}
        for name, proc in self.procs.items():
            now, peak = rss_kb(proc.pid)
            rss[name] = now
            self.peak_kb[name] = max(self.peak_kb.get(name, 0), peak)
        lag = {}
        for name in lag_groups(self.kafka, self.procs):
            try:
                lag[name] = service_lag(self.kafka, self.procs, name)
            except KafkaException:  # a broker hiccup loses one sample, not the run
                lag[name] = -1
        probed = self.probe() if self.probe is not None else {}
        return Sample(time.monotonic() - self._started, rss, lag, probed)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)


def check_alive(procs: dict[str, ServiceProcess]) -> None:
    """Stop the benchmark (with the log's tail) as soon as one of its services has exited."""
    for name, proc in procs.items():
        if not proc.alive:
            raise SystemExit(f"{name} exited:\n{proc.log_tail(10)}")


def wait_registry(kafka: KafkaSettings, enrollment_ids: Iterable[str],
                  procs: dict[str, ServiceProcess], timeout_s: float = 900.0) -> None:
    wanted = set(enrollment_ids)

    def done() -> bool:
        check_alive(procs)
        return wanted <= load_registry(kafka).keys()

    if not wait_for(done, timeout_s, interval_s=0.5):
        raise SystemExit("the fan-out's registry did not get every enrollment")


def wait_registry_count(kafka: KafkaSettings, n: int, procs: dict[str, ServiceProcess],
                        timeout_s: float) -> bool:
    """Until the registry topic holds `n` records and the fan-out has committed every check-in:
    counted from offsets, not read (reading a million-record registry every half second would
    be the benchmark's own load). True if it got there within `timeout_s`."""
    topics = Topics(kafka.topic_prefix)

    def done() -> bool:
        check_alive(procs)
        return (topic_records(kafka, topics.registry) >= n
                and service_lag(kafka, procs, "fan-out", topics.checkins) == 0)

    return wait_for(done, timeout_s, interval_s=1.0)


@dataclass
class Verdicts:
    """The terminal outcomes of some requests, read back from the outcomes topic: per
    (request, target) the first terminal state, how many targets got more than one, and when
    (record timestamp, epoch ms) the last of them was written."""

    states: dict[str, dict[str, str]] = field(default_factory=dict)
    doubled: int = 0
    last_ms: int = 0
    undecodable: int = 0

    def add(self, outcome: dict[str, object], written_ms: int) -> None:
        if not is_terminal(outcome):
            return
        targets = self.states.setdefault(str(outcome["request_id"]), {})
        target = str(outcome["enrollment_id"])
        if target in targets:
            self.doubled += 1
            return
        targets[target] = str(outcome["state"])
        self.last_ms = max(self.last_ms, written_ms)

    def count(self, request_id: str) -> dict[str, int]:
        """Terminal states of one request's targets: state -> how many."""
        counts: dict[str, int] = {}
        for state in self.states.get(request_id, {}).values():
            counts[state] = counts.get(state, 0) + 1
        return counts


def read_verdicts(kafka: KafkaSettings, since_ms: int | None = None,
                  timeout_s: float = 900.0) -> Verdicts:
    """Every terminal outcome the outcomes topic holds now (written at or after `since_ms`)."""
    verdicts = Verdicts()
    topic = Topics(kafka.topic_prefix).outcomes
    for msg in read_to_end(kafka, topic, since_ms=since_ms, timeout_s=timeout_s,
                           name="bench-verdicts"):
        try:
            outcome = SERDE.decode_as(msg.value(), "PushOutcome")
        except DecodeError:
            verdicts.undecodable += 1
            continue
        verdicts.add(dict(outcome), msg.timestamp()[1])
    return verdicts
