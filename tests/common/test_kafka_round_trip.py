"""Every schema, both wire formats, through the real broker and back."""

from __future__ import annotations

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.schemas import SCHEMA_NAMES
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from tests.support.registry import registry_server
from tests.support.samples import SAMPLES


@pytest.mark.kafka
@pytest.mark.parametrize("wire", ["single-object", "confluent"])
def test_every_schema_through_the_broker(
    wire: str, kafka_settings: KafkaSettings, topics: Topics
) -> None:
    producer = ReliableProducer(kafka_settings, name="test")
    with registry_server() as url:
        registry = SchemaRegistryClient({"url": url}) if wire == "confluent" else None
        writer = AvroSerde(registry=registry)
        topic = topics.requests  # any catalogue topic works: records carry their schema
        for name in SCHEMA_NAMES:
            producer.produce_sync(topic, writer.encode(name, SAMPLES[name], topic), key=name)
        reader = AvroSerde(registry=SchemaRegistryClient({"url": url}) if registry else None)
        values = [m.value() or b"" for m in read_to_end(kafka_settings, topic)]
        decoded = dict(reader.decode(v) for v in values)
    assert decoded == SAMPLES
    first_byte = {v[0] for v in values}
    assert first_byte == ({0} if wire == "confluent" else {0xC3})
