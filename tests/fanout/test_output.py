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


@pytest.mark.parametrize("report_acks", [True, False])
def test_transient_refusals_are_retried_then_raised(report_acks: bool) -> None:
    # Nothing listens on port 1: every record times out.
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1",
                          producer_overrides={"message.timeout.ms": 200})
    producer = BatchProducer(kafka, name="test-batch", retry_backoff_s=0.01, max_attempts=3,
                             report_acks=report_acks)
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


@pytest.mark.kafka
def test_without_ack_reports_a_broker_refusal_is_still_returned(
    kafka_settings: KafkaSettings,
) -> None:
    """The broker (not librdkafka) refuses a record over the topic's max.message.bytes: the
    producer that reports refusals only still sees it; the others are acknowledged."""
    topic = make_topic(kafka_settings, "small", config={"max.message.bytes": "2000"})
    producer = BatchProducer(kafka_settings, name="test-batch", report_acks=False)
    producer.produce(topic, b"before", "k1")
    asyncio.run(producer.flush())  # its own batch: the broker refuses a batch as a whole
    producer.produce(topic, os.urandom(5_000), "too-large")
    refused = asyncio.run(producer.flush())
    producer.produce(topic, b"after", "k2")
    assert asyncio.run(producer.flush()) == []
    assert [(r.topic, r.key) for r in refused] == [(topic, b"too-large")]
    assert "MSG_SIZE_TOO_LARGE" in refused[0].reason
    assert producer.take_acked() == {}
    assert [r.value() for r in read_to_end(kafka_settings, topic)] == [b"before", b"after"]
