"""DeadLetterWriter: headers that say where a record came from, and a limit that stops a
consumer from emptying a topic into the DLQ."""

from __future__ import annotations

import os

import pytest

from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit, DlqLimitExceeded
from services.common.kafka.producer import DeliveryCallback, Headers, ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from tests.common.kafka_topics import make_topic


@pytest.mark.kafka
def test_dead_letters_carry_their_origin(kafka_settings: KafkaSettings) -> None:
    dlq = make_topic(kafka_settings, "dlq")
    producer = ReliableProducer(kafka_settings, name="test")
    writer = DeadLetterWriter(producer, dlq, service="tester",
                              limit=DlqLimit(max_ratio=1.0, min_records=1))
    writer.consumed()
    writer.write(source_topic="src", partition=3, offset=42, key=b"k", value=b"\x00bad",
                 reason="not Avro", extra_headers=[("x-extra", b"1")])
    producer.flush(30)
    (record,) = read_to_end(kafka_settings, dlq)
    headers = dict(record.headers() or [])
    assert record.key() == b"k" and record.value() == b"\x00bad"
    assert headers["mdmpush.dlq.reason"] == b"not Avro"
    assert headers["mdmpush.dlq.source.topic"] == b"src"
    assert headers["mdmpush.dlq.source.partition"] == b"3"
    assert headers["mdmpush.dlq.source.offset"] == b"42"
    assert headers["mdmpush.dlq.service"] == b"tester"
    assert int(headers["mdmpush.dlq.at"] or b"0") > 0
    assert headers["x-extra"] == b"1"
    assert writer.written == 1


@pytest.mark.kafka
def test_a_value_too_large_for_the_dlq_goes_without_its_bytes(
    kafka_settings: KafkaSettings,
) -> None:
    dlq = make_topic(kafka_settings, "dlq")
    producer = ReliableProducer(kafka_settings, name="test")
    writer = DeadLetterWriter(producer, dlq, service="tester",
                              limit=DlqLimit(max_ratio=1.0, min_records=1))
    writer.consumed()
    writer.write(source_topic="src", partition=0, offset=9, key=b"k",
                 value=os.urandom(2_000_000), reason="not Avro")
    producer.flush(30)
    (record,) = read_to_end(kafka_settings, dlq)
    headers = dict(record.headers() or [])
    assert record.value() is None and record.key() == b"k"
    assert headers["mdmpush.dlq.reason"] == b"not Avro"
    assert headers["mdmpush.dlq.source.offset"] == b"9"
    assert b"MSG_SIZE_TOO_LARGE" in (headers["mdmpush.dlq.value_dropped"] or b"")


@pytest.mark.kafka
def test_limit_trips_with_a_clear_error_and_writes_nothing_more(
    kafka_settings: KafkaSettings,
) -> None:
    dlq = make_topic(kafka_settings, "dlq")
    producer = ReliableProducer(kafka_settings, name="test")
    writer = DeadLetterWriter(producer, dlq, service="fanout",
                              limit=DlqLimit(max_ratio=0.5, min_records=10))
    # Below min_records nothing is judged: a poison first record is dead-lettered.
    for offset in range(10):
        writer.consumed()
        if offset < 5:
            writer.write(source_topic="src", partition=0, offset=offset, key=None,
                         value=b"x", reason="poison")
    with pytest.raises(DlqLimitExceeded, match=r"fanout: 6 of the last 10 .*limit 50%"):
        writer.write(source_topic="src", partition=0, offset=10, key=None, value=b"x",
                     reason="poison")
    producer.flush(30)
    assert len(list(read_to_end(kafka_settings, dlq))) == 5


def test_limit_judges_recent_records_not_the_whole_history() -> None:
    """After a long healthy run a flood of poison still trips (window of 100 records)."""

    class NoProducer:
        def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                    headers: Headers | None = None, partition: int | None = None,
                    on_delivery: DeliveryCallback | None = None) -> None:
            """The limit is judged before anything is produced."""

    limit = DlqLimit(max_ratio=0.5, min_records=10, window=100)
    writer = DeadLetterWriter(NoProducer(), "dlq", service="s", limit=limit)
    writer.consumed(10_000)
    written = 0
    with pytest.raises(DlqLimitExceeded):
        for offset in range(10_000):
            writer.consumed()
            writer.write(source_topic="src", partition=0, offset=offset, key=None, value=b"x",
                         reason="poison")
            written += 1
    assert written < 200  # tripped within two windows, not after 10,000 good records' worth


def test_limit_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        DlqLimit(max_ratio=1.5, min_records=1)
    with pytest.raises(ValueError):
        DlqLimit(max_ratio=0.5, min_records=0)
    kafka = KafkaSettings(dlq_max_ratio=0.2, dlq_min_records=50)
    assert DlqLimit.from_settings(kafka) == DlqLimit(max_ratio=0.2, min_records=50)
