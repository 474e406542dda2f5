"""PushPolicy, the one Python form of the compacted config topic's records.

Published by operators (services/sdk/policy.py, `mdmpush policy`), applied by the senders (rates,
scope, attempts) and the fan-out (shards). `to_record` refuses what no sender could apply;
`from_record` clamps what an older or foreign producer may have written, so one odd record never
stops a sender.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_CERTIFICATE", "SCOPES", "PushPolicy"]

#: The key of the policy every certificate without its own follows.
DEFAULT_CERTIFICATE = "*"
SCOPES = ("FARM", "PER_INSTANCE")


@dataclass(frozen=True, slots=True)
class PushPolicy:
    """A certificate's policy; rates are pushes per minute, 0 = unthrottled."""

    certificate: str = DEFAULT_CERTIFICATE
    priority_per_minute: float = 0.0
    bulk_per_minute: float = 0.0
    scope: str = "FARM"
    shards: int = 1
    max_attempts: int = 5

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PushPolicy:
        return cls(
            certificate=record["certificate"],
            priority_per_minute=max(0.0, float(record["priority_per_minute"])),
            bulk_per_minute=max(0.0, float(record["bulk_per_minute"])),
            scope=record["scope"],
            shards=max(1, int(record["shards"])),
            max_attempts=max(1, int(record["max_attempts"])),
        )

    def to_record(self, now_ms: int | None = None) -> dict[str, Any]:
        """The Avro PushPolicy record; ValueError with the reason for a policy out of range."""
        if not self.certificate:
            raise ValueError("a policy needs a certificate push topic (or '*')")
        if self.priority_per_minute < 0 or self.bulk_per_minute < 0:
            raise ValueError("rates are pushes per minute, 0 (unthrottled) or more")
        if self.shards < 1 or self.max_attempts < 1:
            raise ValueError("shards and max_attempts are at least 1")
        if self.scope not in SCOPES:
            raise ValueError(f"scope is one of {', '.join(SCOPES)}")
        return {
            "certificate": self.certificate,
            "priority_per_minute": float(self.priority_per_minute),
            "bulk_per_minute": float(self.bulk_per_minute),
            "scope": self.scope,
            "shards": self.shards,
            "max_attempts": self.max_attempts,
            "updated_at": now_ms if now_ms is not None else int(time.time() * 1000),
        }

    def bucket_per_minute(self, lane: str, live_senders: int) -> float:
        """The rate of one sender bucket (one key of this certificate, one lane); 0 =
        unthrottled. FARM: rate / shards; PER_INSTANCE: every live sender gets the rate."""
        rate = self.priority_per_minute if lane == "PRIORITY" else self.bulk_per_minute
        if rate == 0:
            return 0.0
        if self.scope == "PER_INSTANCE":
            rate *= max(1, live_senders)
        return rate / self.shards
