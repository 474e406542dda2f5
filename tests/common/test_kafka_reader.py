"""read_to_end: everything the topic held at the call, in offset order, then stop."""

from __future__ import annotations

import pytest

from services.common.errors import TopicReadError
from services.common.kafka.producer import ReliableProducer
from services.common.kafka.reader import assign_from_time, read_to_end, reader_consumer
from services.common.settings import KafkaSettings
from tests.common.kafka_topics import make_topic

pytestmark = pytest.mark.kafka


def test_reads_what_was_there_and_stops(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "r", partitions=3)
    producer = ReliableProducer(kafka_settings, name="test")
    for i in range(30):
        producer.produce(topic, str(i).encode(), partition=i % 3)
    producer.flush(30)
    reading = read_to_end(kafka_settings, topic)
    first = next(reading)
    for i in range(30, 40):  # produced after the read began: not part of it
        producer.produce(topic, str(i).encode(), partition=i % 3)
    producer.flush(30)
    records = [first, *reading]
    assert sorted(int(r.value() or b"") for r in records) == list(range(30))
    for p in range(3):
        offsets = [r.offset() for r in records if r.partition() == p]
        assert offsets == list(range(10))


def test_reads_chosen_partitions_and_empty_topics(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "r", partitions=2)
    assert list(read_to_end(kafka_settings, topic)) == []
    producer = ReliableProducer(kafka_settings, name="test")
    producer.produce(topic, b"p0", partition=0)
    producer.produce(topic, b"p1", partition=1)
    producer.flush(30)
    assert [r.value() for r in read_to_end(kafka_settings, topic, partitions=[1])] == [b"p1"]
    with pytest.raises(TopicReadError, match="no partition"):
        list(read_to_end(kafka_settings, topic, partitions=[5]))


def test_missing_topic_is_a_clear_error(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(TopicReadError, match="does not exist"):
        list(read_to_end(kafka_settings, f"{kafka_settings.topic_prefix}absent", timeout_s=5))
    with pytest.raises(TopicReadError, match="did not answer"):
        list(read_to_end(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "x", timeout_s=1))


def test_reads_from_a_point_in_time(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "r", partitions=2)
    producer = ReliableProducer(kafka_settings, name="test")
    for i, at in enumerate([1_000, 2_000, 3_000, 4_000]):
        producer.client.produce(topic, str(i).encode(), partition=i % 2, timestamp=at)
    producer.flush(30)
    since = [int(r.value() or b"") for r in read_to_end(kafka_settings, topic, since_ms=2_500)]
    assert sorted(since) == [2, 3]
    assert list(read_to_end(kafka_settings, topic, since_ms=9_000)) == []
    consumer = reader_consumer(kafka_settings, "test")
    try:
        assert assign_from_time(consumer, topic, 3_500, 10) == {1: 2}  # only "3" is that new
        assert len(consumer.assignment()) == 2
    finally:
        consumer.close()
