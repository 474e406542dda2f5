"""Run the real correlator process against the test broker, feed it records, read what it wrote."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Message, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka.producer import ReliableProducer
from services.common.kafka.reader import reader_consumer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
TOPIC_A = "com.apple.mgmt.External.aaaaaaaa-0000-4000-8000-000000000001"
TOPIC_B = "com.apple.mgmt.External.bbbbbbbb-0000-4000-8000-000000000002"


class Correlator:
    """`python -m services.correlator` as a subprocess with test settings."""

    def __init__(self, kafka: KafkaSettings, clock: Clock, **settings: Any) -> None:
        self.env = dict(os.environ)
        self.env.update({
            "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "MDMPUSH_KAFKA_LINGER_MS": "1",
            "MDMPUSH_CLOCK_SPEED": str(clock.speed),
            "MDMPUSH_CLOCK_ORIGIN_MS": str(clock.origin_ms),
            "MDMPUSH_CORRELATOR_GROUP_ID": f"{kafka.topic_prefix}correlator",
            "MDMPUSH_CORRELATOR_METRICS_PORT": "0",
            "MDMPUSH_CORRELATOR_TIMER_TICK_MS": "50",
        })
        self.env.update({f"MDMPUSH_CORRELATOR_{k.upper()}": str(v) for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(f"/tmp/correlator-{kafka.topic_prefix}log")

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.correlator"], cwd=ROOT,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def wait_for_log(self, text: str, timeout_s: float = 30, times: int = 1) -> None:
        """Until the log holds `text` `times` times (processes of one test share the log;
        the one started last must still be running)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log.read_text(errors="replace").count(text) >= times:
                return
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in the correlator's log within {timeout_s}s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ASSIGNED = re.compile(r"assigned outcomes partitions \[([0-9, ]*)\]")


class Replica:
    """One correlator process of several in one group: its own log and metrics port."""

    def __init__(self, kafka: KafkaSettings, clock: Clock, name: str, **settings: Any) -> None:
        self.port = free_port()
        self.proc = Correlator(kafka, clock, metrics_port=self.port, **settings)
        self.proc.log = Path(f"/tmp/correlator-{kafka.topic_prefix}{name}.log")

    def gauges(self) -> dict[str, float]:
        """The unlabelled samples of its /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {s.name: s.value for family in text_string_to_metric_families(text)
                for s in family.samples if not s.labels}

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def partitions(self) -> set[int]:
        """The outcomes partitions of its latest assignment (from its log)."""
        found = ASSIGNED.findall(self.proc.log.read_text(errors="replace"))
        assert found, "no assignment logged"
        return {int(p) for p in found[-1].split(",") if p.strip()}


@contextmanager
def running(kafka: KafkaSettings, clock: Clock, **settings: Any) -> Iterator[Correlator]:
    c = Correlator(kafka, clock, **settings)
    c.start()
    try:
        # The rules' timers run on the records' own times: feeding records before the
        # correlator holds its partitions would spend their race window on its start-up.
        c.wait_for_log("assigned outcomes partitions")
        yield c
    finally:
        c.stop()


class Feed:
    """Produces check-ins and outcomes the way the gateway and the sender do."""

    def __init__(self, kafka: KafkaSettings, topics: Topics, clock: Clock) -> None:
        self.producer = ReliableProducer(kafka, name="test-feed")
        self.serde = AvroSerde()
        self.topics = topics
        self.clock = clock

    def checkin(self, enrollment: str, kind: str = "COMMAND_REPORT", at: int | None = None,
                **fields: Any) -> None:
        record = {
            "event_id": uuid.uuid4().hex, "enrollment_id": enrollment, "tenant": "acme",
            "message_type": kind, "raw_message_type": "", "udid": enrollment, "topic": None,
            "token_hex": None, "push_magic": None, "command_uuid": None, "status": None,
            "occurred_at": self.clock.now_ms() if at is None else at, "source": "sim",
        }
        record.update(fields)
        self._send(self.topics.checkins, enrollment, self.serde.encode("CheckinEvent", record))

    def token_update(self, enrollment: str, at: int, topic: str = TOPIC_A,
                     token: str | None = None, magic: str | None = None,
                     udid: str | None = None) -> None:
        self.checkin(enrollment, "TOKEN_UPDATE", at, topic=topic,
                     token_hex=token or token_of(enrollment), push_magic=magic or f"m-{enrollment}",
                     udid=udid or enrollment)

    def outcome(self, enrollment: str, request: str = "req-1", state: str = "SENT",
                at: int | None = None, **fields: Any) -> dict[str, Any]:
        record = {
            "job_id": f"{request}/{enrollment}", "request_id": request, "tenant": "acme",
            "enrollment_id": enrollment, "state": state, "lane": "PRIORITY", "attempt": 0,
            "repush": 0, "topic": TOPIC_A, "token_hex": token_of(enrollment),
            "push_magic": f"m-{enrollment}", "token_updated_at": None,
            "apns_id": str(uuid.uuid4()), "status": 200 if state == "SENT" else None,
            "reason": None, "apns_timestamp": None, "latency_ms": 2.0,
            "at": self.clock.now_ms() if at is None else at,
        }
        record.update(fields)
        self._send(self.topics.outcomes, enrollment, self.serde.encode("PushOutcome", record))
        return record

    def raw(self, topic: str, value: bytes, key: str = "poison") -> None:
        """A record as is (poison), marked so that readers know the test wrote it."""
        self.producer.produce_sync(topic, value, key, headers=[(TEST_POISON, b"1")],
                                   timeout_s=10)

    def _send(self, topic: str, key: str, value: bytes) -> None:
        self.producer.produce_sync(topic, value, key, timeout_s=10)


def token_of(enrollment: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, enrollment).hex * 2


#: Header of the poison records a test writes itself (`Feed.raw`): readers step over those only.
TEST_POISON = "mdmpush.test.poison"


class Reader:
    """Everything written to a topic since the test began, decoded: a record that does not
    decode fails the test, unless the test wrote it as poison itself (`Feed.raw`), because the
    services must only ever write records their readers can decode."""

    def __init__(self, kafka: KafkaSettings, topic: str, schema: str | None) -> None:
        self.topic = topic
        self.schema = schema
        self.serde = AvroSerde()
        self.consumer = reader_consumer(kafka, "test-reader")
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.records: list[dict[str, Any]] = []
        self.messages: list[Message] = []

    def poll(self) -> None:
        for msg in self.consumer.consume(1000, timeout=0.2):
            if msg.error():
                continue
            self.messages.append(msg)
            if not self.schema or TEST_POISON in dict(msg.headers() or []):
                continue
            try:
                self.records.append(self.serde.decode_as(msg.value(), self.schema))
            except DecodeError as exc:
                raise AssertionError(f"{self.topic}[{msg.partition()}]@{msg.offset()}, "
                                     f"written by a service, does not decode: {exc}") from exc

    def wait(self, pred: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20,
             what: str = "") -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if pred(self.records):
                return self.records
        raise AssertionError(f"timed out waiting for {what or self.topic}: {self.records}")

    def close(self) -> None:
        self.consumer.close()


def verdicts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["state"] in ("ANSWERED", "UNANSWERED")]
