"""BatchProducer: transient refusals are retried a bounded number of times, permanent ones are
returned to the caller instead of being produced forever."""

from __future__ import annotations

import asyncio
import os

import pytest

from services.common.kafka.producer import DeliveryError
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from services.fanout.output import BatchProducer
from tests.common.kafka_topics import make_topic


def test_transient_refusals_are_retried_then_raised() -> None:
    # Nothing listens on port 1: every record times out.
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1",
                          producer_overrides={"message.timeout.ms": 200})
    producer = BatchProducer(kafka, name="test-batch", retry_backoff_s=0.01, max_attempts=3)
    producer.produce("jobs", b"job", "key")
    with pytest.raises(DeliveryError, match="after 3 attempts"):
        asyncio.run(producer.flush())


@pytest.mark.kafka
def test_permanent_refusals_are_returned_and_the_rest_delivered(
    kafka_settings: KafkaSettings,
) -> None:
    topic = make_topic(kafka_settings, "jobs")
    producer = BatchProducer(kafka_settings, name="test-batch")
    producer.produce(topic, b"before", "k1")
    producer.produce(topic, os.urandom(2_000_000), "too-large")  # over librdkafka's 1 MB
    producer.produce(topic, b"after", "k2")
    refused = asyncio.run(producer.flush())
    assert [(r.topic, r.key) for r in refused] == [(topic, "too-large")]
    assert "MSG_SIZE_TOO_LARGE" in refused[0].reason
    assert asyncio.run(producer.flush()) == []  # returned once, not again
    assert [r.value() for r in read_to_end(kafka_settings, topic)] == [b"before", b"after"]
