"""ReliableProducer and AsyncProducer on the real broker: nothing refused is silent or retried
forever, nothing is dropped when the local queue is full."""

from __future__ import annotations

import asyncio
import os

import pytest
from confluent_kafka import KafkaError, Message

from services.common.kafka.aio import AsyncProducer
from services.common.kafka.producer import (
    DeliveryError,
    PermanentDeliveryError,
    ReliableProducer,
    is_permanent,
)
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from tests.common.kafka_topics import make_topic

pytestmark = pytest.mark.kafka

#: Random bytes do not compress: the record is as large on the wire as in memory.
TOO_LARGE_FOR_SMALL_TOPIC = 8192


def small_topic(kafka: KafkaSettings) -> str:
    """A topic whose broker-side limit is 2 KiB: librdkafka queues, the broker refuses."""
    return make_topic(kafka, "small", config={"max.message.bytes": "2048"})


def test_records_round_trip_in_order(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "plain")
    producer = ReliableProducer(kafka_settings, name="test")
    for i in range(50):
        producer.produce(topic, f"v{i}".encode(), key=b"k", headers=[("h", str(i))])
    producer.flush(30)
    records = list(read_to_end(kafka_settings, topic))
    assert [r.value() for r in records] == [f"v{i}".encode() for i in range(50)]
    assert records[7].headers() == [("h", b"7")]
    producer.close()


def test_record_over_librdkafka_limit_raises_at_produce(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "plain")
    producer = ReliableProducer(kafka_settings, name="test")
    with pytest.raises(PermanentDeliveryError, match="MSG_SIZE_TOO_LARGE"):
        producer.produce(topic, os.urandom(2_000_000))
    producer.produce_sync(topic, b"fine")  # the producer still works


def test_record_over_broker_limit_surfaces_at_flush_not_retried(
    kafka_settings: KafkaSettings,
) -> None:
    topic = small_topic(kafka_settings)
    producer = ReliableProducer(kafka_settings, name="test")
    producer.produce(topic, b"small")
    producer.flush(30)  # not in the same batch: the broker refuses a batch as a whole
    producer.produce(topic, os.urandom(TOO_LARGE_FOR_SMALL_TOPIC))
    with pytest.raises(PermanentDeliveryError, match="MSG_SIZE_TOO_LARGE"):
        producer.flush(30)
    producer.flush(30)  # reported once, then forgotten: no endless re-raise, no retry
    assert [r.value() for r in read_to_end(kafka_settings, topic)] == [b"small"]


def test_produce_sync_and_callbacks_classify_broker_refusal(
    kafka_settings: KafkaSettings,
) -> None:
    topic = small_topic(kafka_settings)
    producer = ReliableProducer(kafka_settings, name="test")
    with pytest.raises(PermanentDeliveryError):
        producer.produce_sync(topic, os.urandom(TOO_LARGE_FOR_SMALL_TOPIC))
    seen: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        seen.append(err)

    producer.produce(topic, os.urandom(TOO_LARGE_FOR_SMALL_TOPIC), on_delivery=on_delivery)
    producer.flush(30)
    producer.produce(topic, b"ok", on_delivery=on_delivery)
    producer.flush(30)  # the callback owns the result: flush does not raise it again
    assert len(seen) == 2
    refused, accepted = seen
    assert refused is not None and is_permanent(refused)
    assert accepted is None


def test_full_local_queue_back_pressures_instead_of_dropping(
    kafka_settings: KafkaSettings,
) -> None:
    topic = make_topic(kafka_settings, "plain", partitions=2)
    producer = ReliableProducer(
        kafka_settings, name="test", **{"queue.buffering.max.messages": 5})
    for i in range(300):
        producer.produce(topic, str(i).encode(), key=str(i))
    producer.flush(30)
    assert producer.queue_full_waits > 0  # the queue did fill up
    values = sorted(int(r.value() or b"") for r in read_to_end(kafka_settings, topic))
    assert values == list(range(300))


def test_unacknowledged_records_raise_delivery_error() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")  # nothing listens there
    producer = ReliableProducer(kafka, name="test-closed-port", **{"message.timeout.ms": 60_000})
    producer.produce("anything", b"v")
    with pytest.raises(DeliveryError, match="not acknowledged") as info:
        producer.flush(0.5)
    assert not isinstance(info.value, PermanentDeliveryError)


def test_transient_timeout_is_not_permanent() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    producer = ReliableProducer(kafka, name="test-closed-port", **{"message.timeout.ms": 300})
    with pytest.raises(DeliveryError) as info:
        producer.produce_sync("anything", b"v", timeout_s=30)
    assert not isinstance(info.value, PermanentDeliveryError)
    assert "_MSG_TIMED_OUT" in str(info.value)


def test_async_producer_acknowledges_and_raises(kafka_settings: KafkaSettings) -> None:
    topic = small_topic(kafka_settings)

    async def scenario() -> None:
        aio = AsyncProducer(ReliableProducer(
            kafka_settings, name="test", **{"queue.buffering.max.messages": 3}))
        try:
            await asyncio.gather(*(aio.send(topic, str(i).encode(), key=None)
                                   for i in range(40)))
            with pytest.raises(PermanentDeliveryError):
                await aio.send(topic, os.urandom(TOO_LARGE_FOR_SMALL_TOPIC), key=b"k")
            await aio.flush()
        finally:
            aio.close()
        assert aio.producer.queue_full_waits > 0

    asyncio.run(scenario())
    values = sorted(int(r.value() or b"") for r in read_to_end(kafka_settings, topic))
    assert values == list(range(40))
