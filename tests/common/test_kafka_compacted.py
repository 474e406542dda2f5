"""CompactedView: a compacted topic as a dict with a '*' fallback, loaded then kept live."""

from __future__ import annotations

import time

import pytest

from services.common.errors import TopicReadError
from services.common.kafka.compacted import CompactedView
from services.common.kafka.producer import ReliableProducer
from services.common.settings import KafkaSettings
from tests.common.kafka_topics import make_topic

pytestmark = pytest.mark.kafka


def decode(value: bytes) -> int:
    return int(value)  # ValueError for anything else: an undecodable record


def test_load_fallback_tombstones_poison_and_live_updates(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "config", partitions=2,
                       config={"cleanup.policy": "compact"})
    producer = ReliableProducer(kafka_settings, name="test")
    for key, value in [("a", b"1"), ("*", b"7"), ("b", b"2"), ("a", b"3"), ("bad", b"x"),
                       ("b", None)]:
        producer.produce(topic, value, key)
    producer.flush(30)
    bad: list[str] = []
    view = CompactedView(kafka_settings, topic, decode, name="test-view",
                         on_undecodable=lambda msg, _exc: bad.append(str(msg.key())))
    view.load(30)
    assert view.loaded
    assert view.get("a") == 3  # the latest value
    assert view.get("b") == 7  # deleted by its tombstone: the fallback
    assert view.get("c") == 7
    assert view.undecodable == 1 and bad == ["b'bad'"]
    assert dict(view.items()) == {"a": 3, "*": 7}

    producer.produce_sync(topic, None, "*")
    producer.produce_sync(topic, b"9", "c")
    applied = 0
    deadline = time.monotonic() + 30
    while applied < 2 and time.monotonic() < deadline:
        applied += view.poll(0.2)
    assert view.get("c") == 9
    assert view.get("zzz") is None  # no key, no fallback
    view.close()


def test_missing_or_slow_topic_raises_a_clear_error(kafka_settings: KafkaSettings) -> None:
    topic = make_topic(kafka_settings, "config")
    ReliableProducer(kafka_settings, name="test").produce_sync(topic, b"1", "a")
    view = CompactedView(kafka_settings, topic, decode, name="test-view")
    with pytest.raises(TopicReadError, match="not read to its end within 0s"):
        view.load(0)
    view.load(30)  # and it catches up afterwards
    assert view.get("a") == 1
    view.close()
    empty = CompactedView(kafka_settings, f"{kafka_settings.topic_prefix}absent", decode,
                          name="test-view")
    empty.load(10)  # a topic not created yet holds nothing: loaded at once
    assert empty.get("a") is None
    empty.close()


def test_a_value_decoded_to_none_is_not_kept(kafka_settings: KafkaSettings) -> None:
    """The census decodes every registry record that is not ENROLLED to None: such a key is as
    absent as after a tombstone (the fallback answers for it, `items` leaves it out), so a
    flood of pending Authenticates leaves nothing in the view."""
    topic = make_topic(kafka_settings, "config", config={"cleanup.policy": "compact"})
    producer = ReliableProducer(kafka_settings, name="test")
    for key, value in [("*", b"7"), ("a", b"1"), ("a", b"-"), ("b", b"-"), ("c", b"3")]:
        producer.produce(topic, value, key)
    producer.flush(30)
    view = CompactedView(kafka_settings, topic, lambda v: None if v == b"-" else int(v),
                         name="test-view")
    view.load(30)
    assert dict(view.items()) == {"*": 7, "c": 3}  # "a" enrolled, then not: gone
    assert view.get("a") == 7 and view.get("b") == 7 and view.undecodable == 0
    view.close()
