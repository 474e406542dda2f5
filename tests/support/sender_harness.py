"""Shared harness for the sender's tests and benchmarks.

Real components only: the Kafka broker of the test session, the APNs simulator over TLS on
loopback with certificates from its test PKI, and the sender itself in a thread or a process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.admin import create_topics
from services.common.catalogue import Topics, retry_topic
from services.common.errors import SerdeError
from services.common.kafka.producer import Headers, ReliableProducer
from services.common.kafka.reader import assign_from_beginning, reader_consumer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sender.runner import build_sender
from services.sender.scheduler import NOT_BEFORE_HEADER
from services.sender.service import Sender
from services.sender.settings import SenderSettings
from services.sim.apns.certs import SimPki, issue_push_certificate, make_pki, mdm_topic
from services.sim.apns.faults import Faults
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread

REPO = Path(__file__).resolve().parents[2]
TEST_DELAYS_MS = (200, 500)
SERDE = AvroSerde()


@dataclass
class Pki:
    """A test PKI plus a mounted-certificate directory holding one push certificate per topic."""

    pki: SimPki
    cert_dir: Path
    topics: list[str]
    serials: dict[str, int] = field(default_factory=dict)


def make_certs(directory: Path, count: int) -> Pki:
    pki = make_pki(directory / "pki")
    cert_dir = directory / "certs"
    result = Pki(pki, cert_dir, [])
    for _ in range(count):
        topic = mdm_topic()
        push = issue_push_certificate(pki.ca, topic, cert_dir)
        result.topics.append(topic)
        result.serials[topic] = push.serial
    return result


def start_sim(pki: Pki, faults: Faults | None = None, **config: Any) -> SimulatorThread:
    return ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki.pki, **config), faults=faults)


def create_retry_topics(kafka: KafkaSettings, delays_ms: Iterable[int] = TEST_DELAYS_MS,
                        partitions: int = 2) -> None:
    create_topics(kafka, [retry_topic(d) for d in delays_ms], partitions_override=partitions)


def sender_settings(pki: Pki, sim_url: str, **overrides: Any) -> SenderSettings:
    values: dict[str, Any] = {
        "cert_dir": pki.cert_dir,
        "ca_path": pki.pki.ca.cert_path,
        "base_url": sim_url,
        "retry_delays_ms": TEST_DELAYS_MS,
        "breaker_s": 1.0,
        "metrics_port": 0,
        "group_id": f"sender-{uuid.uuid4().hex[:8]}",
        "shutdown_timeout_s": 5.0,
        "members_refresh_s": 1.0,
    }
    values.update(overrides)
    return SenderSettings(**values)


def settings_env(settings: SenderSettings, kafka: KafkaSettings) -> dict[str, str]:
    """Environment for `python -m services.sender` with these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, tuple):
            value = "[" + ",".join(str(v) for v in value) + "]"
        env[f"MDMPUSH_SENDER_{name.upper()}"] = str(value)
    env["MDMPUSH_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["MDMPUSH_KAFKA_TOPIC_PREFIX"] = kafka.topic_prefix
    env["MDMPUSH_KAFKA_LINGER_MS"] = str(kafka.linger_ms)
    env["MDMPUSH_KAFKA_SESSION_TIMEOUT_MS"] = str(kafka.session_timeout_ms)
    return env


def spawn_sender(
    settings: SenderSettings, kafka: KafkaSettings, log: Path
) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "services.sender"], cwd=REPO, env=settings_env(settings, kafka),
        stdout=out, stderr=out,
    )


class SenderThread:
    """A Sender running on a thread; `stop()` drains it like SIGTERM does."""

    def __init__(self, settings: SenderSettings, kafka: KafkaSettings) -> None:
        self.sender: Sender = build_sender(settings, kafka)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sender", daemon=True)

    def _run(self) -> None:
        try:
            self.sender.run()
        except BaseException as exc:  # reported to the test
            self.error = exc

    def start(self, wait_assigned_s: float = 20.0) -> SenderThread:
        self._thread.start()
        if not self.sender.assigned.wait(wait_assigned_s):
            raise TimeoutError("sender got no partitions")
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        self.sender.stop()
        self._thread.join(timeout_s)
        if self.error is not None:
            raise self.error


@contextmanager
def running_sender(settings: SenderSettings, kafka: KafkaSettings) -> Iterator[Sender]:
    handle = SenderThread(settings, kafka).start()
    try:
        yield handle.sender
    finally:
        handle.stop()


def job(topic: str, n: int, *, lane: str = "BULK", request: str = "req", token: str | None = None,
        attempt: int = 0, **extra: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    record = {
        "job_id": f"{request}/E{n}", "request_id": request, "tenant": "acme",
        "enrollment_id": f"E{n}", "lane": lane, "kind": "MDM", "topic": topic,
        "token_hex": token or f"{n:064x}", "push_magic": f"magic-{n}", "aps_payload": None,
        "expiration": None, "command_type": "apply_policies", "token_updated_at": now,
        "created_at": now, "attempt": attempt, "repush": 0, "last_error": None,
    }
    record.update(extra)
    return record


def produce_jobs(kafka: KafkaSettings, topic_name: str, jobs: Iterable[dict[str, Any]],
                 key: Callable[[dict[str, Any]], str] = lambda j: j["topic"],
                 partition: int | None = None) -> int:
    """Produce PushJobs keyed by certificate topic (to one `partition` if given); every one
    acknowledged on return."""
    producer = ReliableProducer(kafka, name="test-jobs", **{"linger.ms": 20})
    count = 0
    try:
        for record in jobs:
            producer.produce(topic_name, SERDE.encode("PushJob", record), key=key(record),
                             partition=partition)
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
        producer.flush(60)
    finally:
        producer.close()
    return count


def produce_raw(kafka: KafkaSettings, topic_name: str, value: bytes, key: str,
                headers: Headers | None = None) -> None:
    producer = ReliableProducer(kafka, name="test-raw")
    try:
        producer.produce_sync(topic_name, value, key=key, headers=headers)
    finally:
        producer.close()


class Reader:
    """Reads a topic from the beginning (no group), decoding PushOutcome/PushJob records; a record
    that does not decode fails the test (``decode=False`` for topics holding a test's poison)."""

    def __init__(self, kafka: KafkaSettings, topic: str, decode: bool = True) -> None:
        self.topic = topic
        self.decode = decode
        self.records: list[Any] = []
        self.consumer = reader_consumer(kafka, "test-reader")
        assign_from_beginning(self.consumer, topic, timeout_s=10)

    def poll(self, timeout_s: float = 0.1) -> int:
        messages = self.consumer.consume(1000, timeout_s)
        for msg in messages:
            if msg.error():
                continue
            if self.decode:
                try:
                    record = SERDE.decode(msg.value())[1]
                except SerdeError as exc:
                    # Only the services write the topics read decoded here (tests put their
                    # poison records in topics read with decode=False): a record that does not
                    # decode is the service's bug, never something to step over.
                    raise AssertionError(
                        f"{self.topic}[{msg.partition()}]@{msg.offset()} does not decode: {exc}"
                    ) from exc
                record["_headers"] = dict(msg.headers() or [])
                record["_ts"] = msg.timestamp()[1]
                self.records.append(record)
            else:
                self.records.append(msg)
        return len(messages)

    def wait(self, predicate: Callable[[list[Any]], bool], timeout_s: float) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.1)
            if predicate(self.records):
                return self.records
        raise TimeoutError(f"{self.topic}: condition not met in {timeout_s}s; "
                           f"have {len(self.records)} records")

    def drain(self, quiet_s: float = 1.0, limit_s: float = 20.0) -> list[Any]:
        """Read until nothing new arrives for `quiet_s` (bounded by `limit_s`); the first
        records may take a few seconds (connecting, fetching from the beginning)."""
        deadline = time.monotonic() + limit_s
        quiet_since = time.monotonic() + 5.0
        while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
            if self.poll(0.1):
                quiet_since = time.monotonic()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def by_state(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r.get("state", "?"), []).append(r)
    return out


def not_before_of(record: dict[str, Any]) -> int:
    return int(record["_headers"][NOT_BEFORE_HEADER])


def topics_for(kafka: KafkaSettings) -> Topics:
    return Topics(kafka.topic_prefix)
