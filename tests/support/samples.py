"""Realistic sample records of every schema, for round-trip tests."""

from __future__ import annotations

from typing import Any

NOW = 1_795_000_000_000
TOKEN = "a" * 64
TOPIC = "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001"

SAMPLES: dict[str, dict[str, Any]] = {
    "NotificationRequest": {
        "request_id": "req-1", "tenant": "acme", "kind": "MDM", "initiator": "ADMIN",
        "command_type": "apply_policies", "target_all": False,
        "enrollment_ids": ["UDID-1", "UDID-2"], "aps_payload": None, "expiration": NOW + 60_000,
        "requested_at": NOW, "source": "sdk", "principal": "acme-mdm",
    },
    "CheckinEvent": {
        "event_id": "ev-1", "enrollment_id": "UDID-1", "tenant": "acme",
        "message_type": "TOKEN_UPDATE", "raw_message_type": "TokenUpdate", "udid": "UDID-1",
        "topic": TOPIC, "token_hex": TOKEN, "push_magic": "magic-1", "command_uuid": None,
        "status": None, "occurred_at": NOW, "source": "webhook", "principal": "acme-mdm",
    },
    "DeviceRecord": {
        "enrollment_id": "UDID-1", "tenant": "acme", "udid": "UDID-1", "state": "ENROLLED",
        "topic": TOPIC, "token_hex": TOKEN, "push_magic": "magic-1", "enrolled_at": NOW,
        "token_updated_at": NOW, "last_contact_at": NOW, "token_dead_since": None,
        "updated_at": NOW,
    },
    "PushJob": {
        "job_id": "req-1/UDID-1", "request_id": "req-1", "tenant": "acme",
        "enrollment_id": "UDID-1", "lane": "BULK", "kind": "MDM", "topic": TOPIC,
        "token_hex": TOKEN, "push_magic": "magic-1", "aps_payload": None, "expiration": None,
        "command_type": "apply_policies", "token_updated_at": NOW, "created_at": NOW,
        "attempt": 2, "repush": 0, "last_error": "503 ServiceUnavailable",
    },
    "PushOutcome": {
        "job_id": "req-1/UDID-1", "request_id": "req-1", "tenant": "acme",
        "enrollment_id": "UDID-1", "state": "FAILED", "lane": "PRIORITY", "attempt": 0,
        "repush": 0, "topic": TOPIC, "token_hex": TOKEN, "push_magic": "magic-1",
        "token_updated_at": NOW, "apns_id": "8a3f1c2e-0000-4000-8000-000000000001",
        "status": 410, "reason": "Unregistered", "apns_timestamp": NOW - 1000,
        "latency_ms": 3.5, "at": NOW, "rides_on": None,
    },
    "UnansweredPush": {
        "job_id": "req-1/UDID-1", "request_id": "req-1", "tenant": "acme",
        "enrollment_id": "UDID-1", "diagnosis": "STALE_PUSH_MAGIC",
        "evidence": {"duplicate_enrollment": "UDID-1-old"}, "action": "self-healing push",
        "topic": TOPIC, "token_hex": TOKEN, "push_magic": "magic-1", "apns_id": None,
        "pushed_at": NOW, "deadline_at": NOW + 300_000, "flagged_at": NOW + 300_100,
        "last_contact_at": None,
    },
    "PushPolicy": {
        "certificate": TOPIC, "priority_per_minute": 0.0, "bulk_per_minute": 50.0,
        "scope": "FARM", "shards": 1, "max_attempts": 5, "updated_at": NOW,
    },
    "EnrollmentActivity": {
        "tenant": "acme", "enrollment_id": "E1", "state": "INACTIVE",
        "last_contact_at": NOW - 8 * 86_400_000, "at": NOW, "rearmed_at": NOW - 7 * 86_400_000,
    },
}
