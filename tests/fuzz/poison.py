"""Shared pieces of the semantic-poison tests: records that are schema-valid but wrong, produced
as they are, and where each one ended (a dead letter, found by its bytes, or an outcome)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message

from services.common.kafka.dead_letter import REASON_HEADER
from services.common.kafka.producer import ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

SERDE = AvroSerde()
YEAR_3000_MS = 32_503_680_000_000
UDID = "00008030-001A2B3C4D5E6F70"
TOPIC = "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001"


def now_ms() -> int:
    return int(time.time() * 1000)


def produce(kafka: KafkaSettings, topic: str, schema: str, records: list[dict[str, Any]],
            key: str) -> list[bytes]:
    """Produce each record (acknowledged); returns their bytes, by which dead letters are found."""
    producer = ReliableProducer(kafka, name="test-poison")
    values = [SERDE.encode(schema, r) for r in records]
    try:
        for value in values:
            producer.produce_sync(topic, value, key=key)
    finally:
        producer.close()
    return values


def dead_letter_reasons(messages: list[Message]) -> dict[bytes, str]:
    """Value bytes -> reason of every dead letter read."""
    reasons = {}
    for m in messages:
        reason = dict(m.headers() or []).get(REASON_HEADER)
        reasons[m.value() or b""] = reason.decode() if isinstance(reason, bytes) else ""
    return reasons


def checkin(enrollment_id: str, token_hex: str | None = "ab" * 32, at: int | None = None,
            **extra: Any) -> dict[str, Any]:
    record = {
        "event_id": f"ev-{enrollment_id[:40]}-{time.monotonic_ns()}",
        "enrollment_id": enrollment_id,
        "tenant": "acme", "message_type": "TOKEN_UPDATE", "raw_message_type": "TokenUpdate",
        "udid": enrollment_id, "topic": TOPIC, "token_hex": token_hex, "push_magic": "magic",
        "command_uuid": None, "status": None, "occurred_at": now_ms() if at is None else at,
        "source": "webhook", "principal": None,
    }
    record.update(extra)
    return record


def request(request_id: str, ids: list[str], **extra: Any) -> dict[str, Any]:
    record = {
        "request_id": request_id, "tenant": "acme", "kind": "MDM", "initiator": "ADMIN",
        "command_type": "", "target_all": False, "enrollment_ids": ids, "aps_payload": None,
        "expiration": None, "requested_at": now_ms(), "source": "test", "principal": None,
    }
    record.update(extra)
    return record
