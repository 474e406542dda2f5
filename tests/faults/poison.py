"""Poison for the record faults: undecodable records written to every topic a service consumes,
and the check that each one reached the dead-letter topic, set aside by every service that reads
that topic, with a reason (nothing lost silently).

The records carry the test's own poison key (tests/pipeline/conftest.py: OWN_POISON_KEY), so the
pipeline fixture's check for undecodable outcomes written by a service forgives them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from services.common.catalogue import Topics
from services.common.errors import TopicReadError
from services.common.kafka.dead_letter import (
    REASON_HEADER,
    SERVICE_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    VALUE_DROPPED_HEADER,
)
from services.common.kafka.producer import DeliveryError, ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from tests.pipeline.conftest import OWN_POISON_KEY

#: Each consumed topic (a `Topics` attribute) and the services that must dead-letter a record
#: there they cannot decode: the check-ins feed both the fan-out's registry and the correlator.
READERS: Mapping[str, frozenset[str]] = {
    "requests": frozenset({"fanout"}),
    "checkins": frozenset({"fanout", "correlator"}),
    "jobs_bulk": frozenset({"sender"}),
    "outcomes": frozenset({"correlator"}),
}
#: The broker's default message.max.bytes (record batch, after compression).
BROKER_LIMIT = 1_000_012
#: A value the broker takes (uncompressed, one record per batch) but whose dead letter, with its
#: six headers added, is over librdkafka's own 1,000,000-byte limit: the DLQ copy must go without
#: its value (dead_letter.py: VALUE_DROPPED_HEADER) instead of being refused.
NEAR_LIMIT = 999_800

#: The header naming the request of a slice the fan-out dead-lettered (services/fanout/expand.py).
REQUEST_ID_HEADER = "mdmpush.request_id"

Source = tuple[str, int, int]


@dataclass(frozen=True)
class DeadLetter:
    service: str
    reason: str
    value_dropped: bool


def write_poison(kafka: KafkaSettings, size: int) -> dict[Source, frozenset[str]]:
    """One undecodable record of `size` bytes on each topic of READERS; returns where each
    landed (topic, partition, offset) and the services that must dead-letter it."""
    producer = ReliableProducer(kafka, name="faults-poison", **{
        "compression.type": "none", "message.max.bytes": BROKER_LIMIT})
    topics = Topics(kafka.topic_prefix)
    landed: dict[Source, frozenset[str]] = {}
    refused: list[str] = []

    def delivered(readers: frozenset[str]) -> object:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                refused.append(f"{msg.topic()}: {err.str()}")
                return
            landed[(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)] = readers
        return on_delivery

    for attr, readers in READERS.items():
        # 0xff first: neither Avro single-object (c3 01) nor Confluent (00) framing, nor JSON.
        value = b"\xff" + os.urandom(size - 1)
        producer.produce(getattr(topics, attr), value, OWN_POISON_KEY,
                         on_delivery=delivered(readers))  # type: ignore[arg-type]
    producer.flush(60)
    producer.close()
    if refused:
        raise DeliveryError(f"poison not written: {refused}")
    return landed


def _dlq_headers(kafka: KafkaSettings) -> list[dict[str, str]]:
    """The headers of every record of the DLQ topic (none while the topic is gone)."""
    try:
        messages = list(read_to_end(kafka, Topics(kafka.topic_prefix).dlq, timeout_s=30,
                                    name="faults-dlq"))
    except TopicReadError:
        return []
    return [{str(k): _text(v) for k, v in list(msg.headers() or [])} for msg in messages]


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def dead_lettered_requests(kafka: KafkaSettings) -> dict[str, str]:
    """Request id -> reason of every request the fan-out set aside (its slice refused)."""
    return {h[REQUEST_ID_HEADER]: h.get(REASON_HEADER, "")
            for h in _dlq_headers(kafka) if REQUEST_ID_HEADER in h}


def dead_letters(kafka: KafkaSettings) -> dict[Source, list[DeadLetter]]:
    """Every record of the DLQ topic, by the source it names."""
    found: dict[Source, list[DeadLetter]] = {}
    for h in _dlq_headers(kafka):
        if SOURCE_TOPIC_HEADER not in h:
            continue
        source = (h[SOURCE_TOPIC_HEADER], int(h[SOURCE_PARTITION_HEADER]),
                  int(h[SOURCE_OFFSET_HEADER]))
        found.setdefault(source, []).append(DeadLetter(
            h.get(SERVICE_HEADER, "?"), h.get(REASON_HEADER, ""), VALUE_DROPPED_HEADER in h))
    return found


def missing_dead_letters(kafka: KafkaSettings, poison: Mapping[Source, frozenset[str]],
                         timeout_s: float) -> list[str]:
    """Wait until every poison record was dead-lettered, with a reason, by each service that
    reads its topic; returns what is still missing after `timeout_s` (empty: none lost)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = dead_letters(kafka)
        missing = [f"{topic}[{p}]@{o} by {service}"
                   for (topic, p, o), readers in sorted(poison.items())
                   for service in sorted(readers)
                   if not any(d.service == service and d.reason
                              for d in found.get((topic, p, o), []))]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1.0)
