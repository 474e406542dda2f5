"""Outcomes of one request written as the services write them (for the follow tests)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Producer

from services.common.catalogue import Topics
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

SERDE = AvroSerde()


def produce_outcomes(kafka: KafkaSettings, topics: Topics, request_id: str,
                     states: list[tuple[str, str, str | None]], at_ms: int | None = None) -> None:
    """(target, state, reason) outcomes of `request_id`, as the services encode them; `at_ms`
    sets the records' Kafka timestamp (default: now)."""
    producer = Producer(kafka.producer_config(), logger=client_logger("test"))
    now = int(time.time() * 1000)
    for target, state, reason in states:
        record: dict[str, Any] = {
            "job_id": f"{request_id}/{target}", "request_id": request_id, "tenant": "acme",
            "enrollment_id": target, "state": state, "lane": "PRIORITY", "attempt": 0,
            "repush": 0, "topic": None, "token_hex": None, "push_magic": None,
            "token_updated_at": None, "apns_id": None, "status": None, "reason": reason,
            "apns_timestamp": None, "latency_ms": None, "at": now}
        producer.produce(topics.outcomes, SERDE.encode("PushOutcome", record), target,
                         timestamp=at_ms or now)
    assert producer.flush(30) == 0
