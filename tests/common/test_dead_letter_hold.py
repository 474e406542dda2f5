"""DeadLetterWriter while its DLQ topic does not exist: the letter is held (its caller is not told
it was written, so the source offset waits), written again with back-off, once, when the topic
is back; one warning per outage and one when it is writable again.

The rules run on the in-memory Kafka seam with a hand-driven clock; one test runs them on the
real broker, whose producer creates no topic on a write (as on a cluster with
auto.create.topics.enable=false)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from confluent_kafka import KafkaError, Message

from services.common.kafka.dead_letter import (
    HOLD_MAX_S,
    UNWRITABLE,
    DeadLetterWriter,
    DlqLimit,
)
from services.common.kafka.memory import MemoryBroker, MemoryKafkaIO
from services.common.kafka.producer import PermanentDeliveryError, ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from tests.common.kafka_topics import make_topic

DLQ = "dlq"
MISSING = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
UNKNOWN_LOCALLY = PermanentDeliveryError("Kafka refused a record to dlq before queueing it",
                                         KafkaError._UNKNOWN_TOPIC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Results:
    """The delivery results the writer's caller was given."""

    def __init__(self) -> None:
        self.got: list[KafkaError | None] = []

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        self.got.append(err)


def _setup(service: str = "tester") -> tuple[MemoryBroker, MemoryKafkaIO, DeadLetterWriter,
                                              Clock]:
    broker = MemoryBroker()
    io = MemoryKafkaIO(broker)
    clock = Clock()
    writer = DeadLetterWriter(io, DLQ, service=service,
                              limit=DlqLimit(max_ratio=1.0, min_records=1), monotonic=clock)
    writer.consumed(10)
    return broker, io, writer, clock


def _write(writer: DeadLetterWriter, offset: int, results: Results | None = None,
           partition: int = 0) -> None:
    writer.write(source_topic="src", partition=partition, offset=offset, key=b"k",
                 value=b"poison-%d" % offset, reason="not Avro", on_delivery=results)


def test_a_letter_refused_for_a_missing_topic_is_held_and_written_once_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, io, writer, clock = _setup()
    results = Results()
    io.refuse(DLQ, MISSING)  # the broker's answer, after librdkafka's metadata wait
    caplog.set_level(logging.WARNING, "services.common.kafka.dead_letter")
    _write(writer, 7, results)
    io.poll()
    assert writer.held == 1 and results.got == []  # the caller's offset waits
    # librdkafka knows now: later writes are refused at once (before queueing).
    io.refuse(DLQ, None)
    io.raise_on_produce(DLQ, UNKNOWN_LOCALLY)
    _write(writer, 8, results)
    assert writer.held == 2 and results.got == []
    assert writer.resend_due() == 0  # the back-off is not over
    clock.now += 1.0
    assert writer.resend_due() == 2 and writer.held == 2  # refused again at once: held again
    warnings = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert len(warnings) == 1 and DLQ in warnings[0].getMessage()  # one per outage

    broker.create_topic(DLQ)
    io.raise_on_produce(DLQ, None)
    clock.now += 0.5
    assert writer.resend_due() == 0  # its back-off is not over
    clock.now += 0.5
    assert writer.resend_due() == 2
    io.poll()
    assert writer.held == 0 and results.got == [None, None]
    assert [r.value() for r in broker.records(DLQ)] == [b"poison-7", b"poison-8"]
    assert writer.resend_due() == 0 and len(broker.records(DLQ)) == 2  # written once
    assert [r for r in caplog.records if "writable again" in r.getMessage()]


def test_the_back_off_doubles_to_its_bound_and_starts_over_after_an_outage() -> None:
    broker, io, writer, clock = _setup()
    io.raise_on_produce(DLQ, UNKNOWN_LOCALLY)
    _write(writer, 1)
    waits = []
    for _ in range(8):
        waits.append(writer.resend_in())
        clock.now += writer.resend_in()
        assert writer.resend_due() == 1
    assert waits == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, HOLD_MAX_S, HOLD_MAX_S]
    broker.create_topic(DLQ)
    io.raise_on_produce(DLQ, None)
    clock.now += writer.resend_in()
    writer.resend_due()
    io.poll()
    assert writer.held == 0
    io.raise_on_produce(DLQ, UNKNOWN_LOCALLY)  # a second outage: 1 s again
    _write(writer, 2)
    assert writer.resend_in() == 1.0


def test_other_refusals_still_reach_the_caller_and_a_flushing_caller_sees_them() -> None:
    _broker, io, writer, _clock = _setup()
    results = Results()
    denied = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    io.refuse(DLQ, denied)
    _write(writer, 1, results)
    _write(writer, 2)  # no callback: `check()` raises it
    io.poll()
    assert results.got == [denied] and writer.held == 0
    with pytest.raises(PermanentDeliveryError, match="TOPIC_AUTHORIZATION_FAILED"):
        writer.check()
    writer.check()  # raised once


def test_forget_drops_the_held_letters_of_inputs_given_back() -> None:
    broker, io, writer, clock = _setup()
    io.raise_on_produce(DLQ, UNKNOWN_LOCALLY)
    _write(writer, 1, partition=0)
    _write(writer, 2, partition=1)
    assert writer.forget({("src", 0)}) == 1 and writer.held == 1
    broker.create_topic(DLQ)
    io.raise_on_produce(DLQ, None)
    clock.now += writer.resend_in()
    writer.resend_due()
    io.poll()
    assert [r.value() for r in broker.records(DLQ)] == [b"poison-2"]
    assert writer.forget() == 0


def test_refused_attempts_are_counted_per_service_and_topic() -> None:
    _broker, io, writer, clock = _setup(service=f"svc-{uuid.uuid4().hex[:6]}")
    counted = UNWRITABLE.labels(writer.service, DLQ)
    io.raise_on_produce(DLQ, UNKNOWN_LOCALLY)
    _write(writer, 1)
    clock.now += writer.resend_in()
    writer.resend_due()
    assert counted._value.get() == 2


@pytest.mark.kafka
def test_on_the_broker_a_letter_waits_for_its_topic_and_lands_once(
    kafka_settings: KafkaSettings,
) -> None:
    topic = f"{kafka_settings.topic_prefix}dlq"
    # No topic created by this producer's metadata requests (a strict cluster), and librdkafka's
    # wait for an unknown topic shortened from 30 s.
    producer = ReliableProducer(kafka_settings, name="test", **{
        "allow.auto.create.topics": False, "topic.metadata.propagation.max.ms": 500})
    writer = DeadLetterWriter(producer, topic, service="tester",
                              limit=DlqLimit(max_ratio=1.0, min_records=1))
    writer.consumed()
    results = Results()
    _write(writer, 5, results)
    deadline = time.monotonic() + 20
    while not writer.held and time.monotonic() < deadline:
        producer.poll(0.1)
    assert writer.held == 1 and results.got == []
    make_topic(kafka_settings, "dlq")
    while results.got == [] and time.monotonic() < deadline:
        writer.resend_due()
        producer.poll(0.1)
    assert results.got == [None] and writer.held == 0
    producer.flush(10)
    (record,) = read_to_end(kafka_settings, topic)
    assert record.value() == b"poison-5"

