"""A fan-out worker as a subprocess against the real broker, and typed reads of its topics."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.common.errors import DecodeError
from services.common.kafka.logs import client_logger
from services.common.kafka.producer import Headers, ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sender.service import TOKEN_DEAD

REPO = Path(__file__).resolve().parents[2]
SERDE = AvroSerde()


class Worker:
    """`python -m services.fanout` with this test's prefix; logs kept for failure messages."""

    def __init__(self, kafka: KafkaSettings, data_dir: Path, **env: str) -> None:
        self.kafka = kafka
        self.data_dir = data_dir
        #: The tree whose `services` runs (a benchmark sets an extracted commit).
        self.cwd = REPO
        self.env = {
            **os.environ,
            "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "MDMPUSH_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "MDMPUSH_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "MDMPUSH_FANOUT_PARTITIONS": "4",
            "MDMPUSH_FANOUT_COMMIT_INTERVAL_S": "0.5",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / f"worker-{self.runs}.log").open("wb")
        self.env["MDMPUSH_FANOUT_DATA_DIR"] = str(self.data_dir / f"run-{self.runs}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.fanout"], cwd=self.cwd, env=self.env,
            stdout=log, stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / f"worker-{self.runs}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Publisher:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.producer = ReliableProducer(kafka, name="test-publisher")

    def record(self, topic: str, schema: str, record: dict[str, Any], key: str,
               headers: Headers | None = None) -> None:
        self.producer.produce_sync(topic, SERDE.encode(schema, record, topic), key=key,
                                   headers=headers)

    def outcome_410(self, topic: str, eid: str, token: str, apns_timestamp: int) -> None:
        """A FAILED 410 outcome as the sender writes it (marked for the fan-out)."""
        self.record(topic, "PushOutcome", failed_410(eid, token, apns_timestamp), eid,
                    headers=TOKEN_DEAD)

    def raw(self, topic: str, value: bytes, key: str) -> None:
        self.producer.produce_sync(topic, value, key=key)


class Reader:
    """Everything on one topic from the beginning, decoded as `schema` (None: raw messages).

    A record that does not decode fails the test: the service under test wrote it (or something
    else did that the test did not expect). The only exception is a poison record the test wrote
    itself onto a topic it also reads decoded, named by its exact bytes with `tolerate`."""

    def __init__(self, kafka: KafkaSettings, topic: str, schema: str | None) -> None:
        self.topic = topic
        self.schema = schema
        self.consumer = Consumer(
            kafka.consumer_config(f"test-{uuid.uuid4().hex}", **{"enable.auto.commit": False}),
            logger=client_logger("test-reader"),
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.items: list[Any] = []
        self._tolerated: set[bytes] = set()

    def tolerate(self, value: bytes) -> None:
        """Step over records whose value is exactly `value` (the test's own poison)."""
        self._tolerated.add(value)

    def poll(self) -> None:
        for msg in self.consumer.consume(num_messages=10_000, timeout=0.2):
            if msg.error() is not None:
                continue
            if self.schema is None:
                self.items.append(msg)
                continue
            try:
                self.items.append(SERDE.decode_as(msg.value(), self.schema))
            except DecodeError as exc:
                if msg.value() in self._tolerated:
                    continue
                raise AssertionError(
                    f"{self.topic}[{msg.partition()}]@{msg.offset()} does not decode as "
                    f"{self.schema}: {exc}") from exc

    def wait(self, until: Callable[[list[Any]], bool], timeout_s: float = 120.0,
             worker: Worker | None = None) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if until(self.items):
                return self.items
            if worker is not None and not worker.alive():
                raise AssertionError(f"fan-out worker died:\n{worker.log_tail()}")
        tail = worker.log_tail() if worker is not None else ""
        raise AssertionError(f"timed out; have {len(self.items)} records\n{tail}")

    def settle(self, quiet_s: float = 1.5) -> list[Any]:
        """Read until nothing new arrives for `quiet_s` (to prove something did *not* happen)."""
        deadline = time.monotonic() + quiet_s
        while time.monotonic() < deadline:
            before = len(self.items)
            self.poll()
            if len(self.items) != before:
                deadline = time.monotonic() + quiet_s
        return self.items

    def close(self) -> None:
        self.consumer.close()


T1 = "com.apple.mgmt.External.cert-one"
#: 2023-11-14: in the past, as a check-in's time is (one ahead of the fan-out's clock by more
#: than MDMPUSH_FANOUT_FUTURE_TOLERANCE_MS is applied at the fan-out's now).
AT = 1_700_000_000_000


def token(eid: str, generation: int = 0) -> str:
    return hashlib.sha256(f"{eid}/{generation}".encode()).hexdigest()


def enroll(eid: str, topic: str = T1, tenant: str = "acme", at: int = AT) -> list[dict[str, Any]]:
    """Authenticate then TokenUpdate (at + 10): a pushable enrollment."""
    return [
        checkin(eid, "AUTHENTICATE", at, tenant, topic=topic),
        checkin(eid, "TOKEN_UPDATE", at + 10, tenant, topic=topic, token_hex=token(eid),
                push_magic=f"magic-{eid}"),
    ]


def checkin(eid: str, kind: str, at: int, tenant: str | None = "acme",
            **fields: Any) -> dict[str, Any]:
    """A CheckinEvent; TOKEN_UPDATE/AUTHENTICATE carry topic, token and magic via `fields`."""
    return {
        "event_id": uuid.uuid4().hex, "enrollment_id": eid, "tenant": tenant,
        "message_type": kind, "raw_message_type": "", "udid": eid, "topic": None,
        "token_hex": None, "push_magic": None, "command_uuid": None, "status": None,
        "occurred_at": at, "source": "sim", **fields,
    }


def request(rid: str, tenant: str = "acme", ids: list[str] | None = None,
            **fields: Any) -> dict[str, Any]:
    """A NotificationRequest: explicit `ids`, or target_all when None."""
    return {
        "request_id": rid, "tenant": tenant, "kind": "MDM", "initiator": "USER",
        "command_type": "apply_policies", "target_all": ids is None,
        "enrollment_ids": ids or [], "aps_payload": None, "expiration": None,
        "requested_at": 0, "source": "sdk", **fields,
    }


def failed_410(eid: str, token: str, apns_timestamp: int) -> dict[str, Any]:
    return {
        "job_id": f"old/{eid}", "request_id": "old", "tenant": "acme", "enrollment_id": eid,
        "state": "FAILED", "lane": "BULK", "attempt": 0, "repush": 0, "topic": None,
        "token_hex": token, "push_magic": None, "token_updated_at": None, "apns_id": None,
        "status": 410, "reason": "Unregistered", "apns_timestamp": apns_timestamp,
        "latency_ms": 1.0, "at": apns_timestamp + 5,
    }


def policy(certificate: str, shards: int) -> dict[str, Any]:
    return {
        "certificate": certificate, "priority_per_minute": 0.0, "bulk_per_minute": 0.0,
        "scope": "FARM", "shards": shards, "max_attempts": 5, "updated_at": 0,
    }
