"""The Kafka plumbing of every service, one copy of each piece.

* `producer`: `ReliableProducer` (the one BufferError loop, every delivery checked,
  `PermanentDeliveryError` for what can never be accepted); `aio`: its asyncio face.
* `reader`: read a topic to the end offsets it had at the call; `compacted`: a compacted topic
  as a dict with a `'*'` fallback key.
* `dead_letter`: the dead-letter writer, its headers and its `DlqLimit`.
* `logs`: librdkafka's log lines through Python logging, one line per outage per client.
* `io`, `memory`: the sender's Kafka I/O seam and its in-memory twin.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from services.common.kafka.logs import client_logger
from services.common.kafka.producer import (
    PARTITION_UA,
    DeliveryError,
    Headers,
    PermanentDeliveryError,
    ReliableProducer,
)
from services.common.settings import KafkaSettings

#: On the sender's FAILED 410 outcomes (APNs: the token is no longer valid). The fan-out reads
#: only the outcomes that carry it (services/fanout/dead_tokens.py).
TOKEN_DEAD_HEADER = "mdmpush.token_dead"

__all__ = [
    "PARTITION_UA",
    "TOKEN_DEAD_HEADER",
    "DeliveryError",
    "Headers",
    "PermanentDeliveryError",
    "ReliableProducer",
    "make_producer",
]


def make_producer(settings: KafkaSettings, **overrides: Any) -> Producer:
    """A bare idempotent confluent producer, for the tests and benchmarks that still drive one
    directly (tests/doctor/conftest.py, tests/bench/bench_fanout.py, bench_e2e.py); services
    use ReliableProducer."""
    return Producer(settings.producer_config(**overrides), logger=client_logger("producer"))
