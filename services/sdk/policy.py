"""Publish push policies (throttle, scope, shards, attempts) to the compacted config topic.

This is Afaria's "APNS throttle" settings page as an event: one record per certificate (or '*'
for the default), keyed by certificate, so the topic keeps the latest. Senders and the fan-out
apply a change within the minute, without restart; a tombstone removes a certificate's own
policy and the default applies again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Producer

from services.common.catalogue import Topics
from services.common.kafka import make_producer, produce_sync
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings

Scope = Literal["farm", "per_instance"]
#: The key of the policy every certificate without its own follows.
DEFAULT_CERTIFICATE = "*"


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """A certificate's policy; rates are pushes per minute, 0 = unthrottled."""

    certificate: str = DEFAULT_CERTIFICATE
    priority_per_minute: float = 0.0
    bulk_per_minute: float = 0.0
    scope: Scope = "farm"
    shards: int = 1
    max_attempts: int = 5

    def to_record(self, now_ms: int | None = None) -> dict[str, Any]:
        if not self.certificate:
            raise ValueError("a policy needs a certificate push topic (or '*')")
        if self.priority_per_minute < 0 or self.bulk_per_minute < 0:
            raise ValueError("rates are pushes per minute, 0 (unthrottled) or more")
        if self.shards < 1 or self.max_attempts < 1:
            raise ValueError("shards and max_attempts are at least 1")
        return {
            "certificate": self.certificate,
            "priority_per_minute": float(self.priority_per_minute),
            "bulk_per_minute": float(self.bulk_per_minute),
            "scope": self.scope.upper(),
            "shards": self.shards,
            "max_attempts": self.max_attempts,
            "updated_at": now_ms if now_ms is not None else int(time.time() * 1000),
        }


class PolicyPublisher:
    """Writes PushPolicy records (and tombstones) to mdm.push.config.v1, acknowledged."""

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        producer: Producer | None = None,
        serde: AvroSerde | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.topic = Topics(self.settings.topic_prefix).config
        self.producer = producer or make_producer(self.settings)
        self.serde = serde or serde_for(self.settings)

    def set(self, policy: PolicyUpdate) -> None:
        value = self.serde.encode("PushPolicy", policy.to_record(), self.topic)
        produce_sync(self.producer, self.topic, value, key=policy.certificate)

    def clear(self, certificate: str) -> None:
        """Remove the certificate's own policy (a tombstone): the default applies again."""
        produce_sync(self.producer, self.topic, None, key=certificate)
