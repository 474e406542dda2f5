"""Where simulated devices' check-ins go: to Kafka now, through the gateway's webhook later.

Devices only know :class:`CheckinSink`, so swapping the Kafka shortcut for real MDM check-in
requests to the gateway changes one object, not the fleet. The Kafka sink writes exactly what the
gateway would: an Avro ``CheckinEvent`` keyed by enrollment id on ``mdm.checkin.events.v1``.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message

from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer, delivery_error
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

__all__ = ["CheckinSink", "KafkaCheckinSink", "RecordingSink"]


class CheckinSink(Protocol):
    """Receives a device's messages to the MDM server as CheckinEvent records."""

    def send(self, event: dict[str, Any]) -> None:
        """Hand over one event; must not block for long (called on the fleet's thread)."""
        ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything sent so far is acknowledged, or raise."""
        ...


class KafkaCheckinSink:
    """Produces CheckinEvents (Avro, key = enrollment id) to the catalogue's check-in topic.

    Asynchronous: ``send`` returns once librdkafka has the record (waiting while its local queue
    is full); :meth:`flush` reports any record Kafka refused, so a test never mistakes a lost
    check-in for a silent device.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        serde: AvroSerde | None = None,
        producer: ReliableProducer | None = None,
    ) -> None:
        self.topic = Topics(settings.topic_prefix).checkins
        self.serde = serde or AvroSerde()
        self._producer = producer or ReliableProducer(settings, name="sim-fleet")
        self._errors: list[KafkaError] = []
        self._lock = threading.Lock()
        self.acknowledged = 0

    def send(self, event: dict[str, Any]) -> None:
        value = self.serde.encode("CheckinEvent", event, self.topic)
        key = event["enrollment_id"].encode()
        self._producer.produce(self.topic, value, key, on_delivery=self._done)
        self._producer.poll(0)

    def _done(self, err: KafkaError | None, _msg: Message) -> None:
        with self._lock:
            if err is None:
                self.acknowledged += 1
            else:
                self._errors.append(err)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Raise DeliveryError (PermanentDeliveryError when it can never succeed) if a
        check-in was refused or is still unacknowledged after `timeout_s`."""
        self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            error = delivery_error(errors[0], self.topic)
            raise type(error)(f"{len(errors)} check-in(s) refused; the first: {error}")


class RecordingSink:
    """Keeps events in memory: for unit tests of device behaviour and for in-process demos."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered."""

    def of(self, enrollment_id: str) -> list[dict[str, Any]]:
        """Events of one enrollment, in the order sent."""
        with self._lock:
            return [e for e in self.events if e["enrollment_id"] == enrollment_id]
