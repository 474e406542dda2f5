"""The doctor's topic reader against the real broker: a snapshot up to the high watermarks,
one key without decoding the others, tombstones, undecodable records counted, missing topics."""

from __future__ import annotations

import pytest

from services.common.catalogue import Topics
from services.common.errors import TopicReadError
from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.common.snapshot import read_topic
from tests.doctor.conftest import Publisher
from tests.support.samples import SAMPLES

pytestmark = pytest.mark.kafka


def test_reads_every_partition_to_the_high_watermark(
    kafka_settings: KafkaSettings, topics: Topics, publisher: Publisher
) -> None:
    for i in range(300):
        key = f"E{i % 7}"
        record = {**SAMPLES["PushOutcome"], "job_id": f"r{i}/{key}", "enrollment_id": key}
        publisher.send(topics.outcomes, "PushOutcome", key, record)
    publisher.send(topics.outcomes, "PushOutcome", "E3", b"\xc3\x01garbage")
    publisher.flush()
    everything = read_topic(kafka_settings, topics.outcomes, "PushOutcome")
    assert len(everything.records) == 300 and everything.undecodable == 1
    one = read_topic(kafka_settings, topics.outcomes, "PushOutcome", key="E3")
    assert {r.key for r in one.records} == {"E3"} and len(one.records) == 43
    assert [r.value["job_id"] for r in one.records if r.value] == [
        f"r{i}/E3" for i in range(3, 300, 7)]  # one key, one partition: in order
    assert one.undecodable == 1
    assert read_topic(kafka_settings, topics.alerts, "UnansweredPush").records == []


def test_registry_keeps_the_latest_record_and_honours_tombstones(
    kafka_settings: KafkaSettings, topics: Topics, publisher: Publisher
) -> None:
    base = SAMPLES["DeviceRecord"]
    publisher.send(topics.registry, "DeviceRecord", "E1", {**base, "enrollment_id": "E1"})
    publisher.send(topics.registry, "DeviceRecord", "E1",
                   {**base, "enrollment_id": "E1", "push_magic": "newer"})
    publisher.send(topics.registry, "DeviceRecord", "E2", {**base, "enrollment_id": "E2"})
    publisher.send(topics.registry, "DeviceRecord", "E2", None)
    publisher.flush()
    registry = load_registry(kafka_settings)
    assert set(registry) == {"E1"} and registry["E1"]["push_magic"] == "newer"
    assert load_registry(kafka_settings, "E2") == {}


def test_missing_topic_and_unreachable_broker_are_one_line_errors(
    kafka_settings: KafkaSettings,
) -> None:
    with pytest.raises(TopicReadError, match="does not exist"):
        read_topic(kafka_settings, "no.such.topic.v1", "PushOutcome")
    dead = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(TopicReadError, match="did not answer"):
        read_topic(dead, "x", "PushOutcome", timeout_s=1)
