"""Publish NotificationRequests from any Python MDM component.

The SDK is the only thing an MDM server needs to enqueue a push: it replaces the INSERT into
Afaria's A_Q_APNS / A_Q_APNS_PRIORITY tables with one acknowledged Kafka record.

A request is checked against the same limits the gateway and the fan-out apply
(services/common/limits.py) before anything is published: a caller learns at once, with the
field and the reason, what the pipeline would otherwise dead-letter or skip much later.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer
from services.common.limits import InvalidInput, check_notification_request
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings

Initiator = Literal["user", "admin"]
Kind = Literal["mdm", "aps"]


class InvalidRequest(InvalidInput, ValueError):
    """A request or policy outside the limits: `field` names what, `reason` (and `str()`) why.

    A ValueError too, so callers written before the limits existed still catch it."""


@dataclass(frozen=True, slots=True)
class PushRequest:
    """What a caller asks for; `to_record()` gives the Avro NotificationRequest."""

    tenant: str
    enrollment_ids: Sequence[str] = ()
    target_all: bool = False
    initiator: Initiator = "admin"
    kind: Kind = "mdm"
    command_type: str = ""
    aps_payload: str | None = None
    expiration_ms: int | None = None
    source: str = "sdk"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_record(self, now_ms: int | None = None) -> dict[str, Any]:
        """The Avro NotificationRequest; InvalidRequest if anything is outside the limits."""
        if not self.target_all and not self.enrollment_ids:
            raise InvalidRequest("enrollment_ids", "a request needs enrollment ids or "
                                 "target_all=True")
        if self.kind == "aps" and not self.aps_payload:
            raise InvalidRequest("aps_payload", "an APS request needs an aps_payload")
        if isinstance(self.enrollment_ids, str):
            raise InvalidRequest("enrollment_ids", "a sequence of ids, not one string")
        record = {
            "request_id": self.request_id,
            "tenant": self.tenant,
            "kind": self.kind.upper(),
            "initiator": self.initiator.upper(),
            "command_type": self.command_type,
            "target_all": self.target_all,
            "enrollment_ids": list(self.enrollment_ids),
            "aps_payload": self.aps_payload,
            "expiration": self.expiration_ms,
            "requested_at": now_ms if now_ms is not None else int(time.time() * 1000),
            "source": self.source,
        }
        try:
            check_notification_request(record)
        except InvalidInput as exc:
            raise InvalidRequest(exc.field, exc.reason) from None
        return record


class KafkaPublisher:
    """A producer for one of the catalogue's topics (`topic_name`: a Topics attribute), with
    the serde the settings ask for (Confluent format when a registry is configured). Every
    publish waits for Kafka's acknowledgement and raises DeliveryError (PermanentDeliveryError
    for a record Kafka can never accept) otherwise."""

    topic_name = ""

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        producer: ReliableProducer | None = None,
        serde: AvroSerde | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.topic: str = getattr(Topics(self.settings.topic_prefix), self.topic_name)
        self.producer = producer or ReliableProducer(self.settings, name="sdk")
        self.serde = serde or serde_for(self.settings)


class PushPublisher(KafkaPublisher):
    """Publishes requests to mdm.notification.requests.v1, keyed by tenant, acknowledged."""

    topic_name = "requests"

    def publish(self, request: PushRequest, now_ms: int | None = None) -> str:
        """Validate, publish and wait for Kafka's acknowledgement; returns the request id.

        InvalidRequest (nothing published) if the request is outside the limits.

        `now_ms` becomes the record's requested_at (default: now); following the request
        (`mdmpush follow ID --since <requested_at>`, services.sdk.track) starts there."""
        value = self.serde.encode("NotificationRequest", request.to_record(now_ms), self.topic)
        self.producer.produce_sync(self.topic, value, key=request.tenant)
        return request.request_id
