"""Both wire formats, every schema, and poison records -> one typed error."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from services.common.errors import DecodeError, EncodeError
from services.common.schemas import SCHEMA_NAMES
from services.common.serde import SINGLE_OBJECT_MAGIC, AvroSerde
from tests.support.registry import registry_server
from tests.support.samples import SAMPLES


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_single_object_round_trip(name: str) -> None:
    serde = AvroSerde()
    data = serde.encode(name, SAMPLES[name])
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert data[2:10] == serde.schemas.current(name).fingerprint
    assert serde.decode(data) == (name, SAMPLES[name])


def test_confluent_format_round_trip_through_registry_client() -> None:
    with registry_server() as url:
        writer = AvroSerde(registry=SchemaRegistryClient({"url": url}))
        reader = AvroSerde(registry=SchemaRegistryClient({"url": url}))  # cold cache
        for name in SCHEMA_NAMES:
            data = writer.encode(name, SAMPLES[name], topic=f"topic-{name}")
            assert data[0] == 0
            assert reader.decode(data) == (name, SAMPLES[name])


def test_one_decoder_reads_both_formats() -> None:
    with registry_server() as url:
        registry_serde = AvroSerde(registry=SchemaRegistryClient({"url": url}))
        confluent = registry_serde.encode("PushJob", SAMPLES["PushJob"], topic="jobs")
        single = AvroSerde().encode("PushJob", SAMPLES["PushJob"])
        assert registry_serde.decode(confluent) == registry_serde.decode(single)


def test_encode_rejects_record_not_matching_schema() -> None:
    bad = dict(SAMPLES["PushJob"], lane="SIDEWAYS")
    with pytest.raises(EncodeError, match="PushJob"):
        AvroSerde().encode("PushJob", bad)


def test_expected_schema_is_enforced() -> None:
    data = AvroSerde().encode("PushJob", SAMPLES["PushJob"])
    with pytest.raises(DecodeError, match="expected a PushOutcome record, got PushJob"):
        AvroSerde().decode_as(data, "PushOutcome")


def _poison() -> dict[str, bytes]:
    good = AvroSerde().encode("PushOutcome", SAMPLES["PushOutcome"])
    return {
        "empty": b"",
        "random bytes": os.urandom(64).replace(b"\x00", b"\x01").replace(b"\xc3", b"\xc4"),
        "unknown fingerprint": SINGLE_OBJECT_MAGIC + bytes(8) + good[10:],
        "truncated header": good[:6],
        "truncated body": good[:-5],
        "trailing garbage": good + b"\x02\x04",
        "confluent without registry": b"\x00\x00\x00\x00\x07" + good[10:],
        "json instead of avro": b'{"request_id": "x"}',
    }


@pytest.mark.parametrize("case", list(_poison()))
def test_poison_record_gives_typed_error(case: str) -> None:
    with pytest.raises(DecodeError) as info:
        AvroSerde().decode(_poison()[case])
    assert info.value.reason  # a one-line reason for the DLQ header


def test_unknown_registry_schema_is_a_decode_error() -> None:
    with registry_server() as url:
        serde = AvroSerde(registry=SchemaRegistryClient({"url": url}))
        with pytest.raises(DecodeError, match="schema id 99 not resolvable"):
            serde.decode(b"\x00\x00\x00\x00\x63\x02")
