"""Waiting for a topic's lowered `max.message.bytes` to take effect on the broker."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, Producer

from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings


def until_the_broker_refuses(kafka: KafkaSettings, topic: str, probe: bytes, key: str | bytes,
                             timeout_s: float = 60.0) -> None:
    """Return once the broker refuses `probe` (incompressible bytes over the new limit) to
    `topic`. The broker applies a config change from ZooKeeper asynchronously (seconds on a
    loaded CI machine), so a record produced before that is accepted and never dead-lettered; a
    probe accepted meanwhile lands in the topic, so its reader must step over it (the caller
    picks a `key` or value the reader tolerates)."""
    producer = Producer(kafka.producer_config(), logger=client_logger("test-probe"))
    errors: list[KafkaError] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        errors.clear()
        producer.produce(topic, probe, key,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
        producer.flush(30)
        if errors and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: max.message.bytes not applied within {timeout_s:.0f} s")
