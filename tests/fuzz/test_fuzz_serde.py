"""Fuzzing the Avro decoder: any bytes end in a record or a DecodeError, never another exception.

Both wire formats (single-object `C3 01` + fingerprint, and Confluent `00` + schema id with a
registry) are fed: arbitrary bytes, a known header with an arbitrary body, valid encodings of
every released schema version mutated (truncated, bytes flipped, bytes appended), and, for the
Confluent format, a registry that answers with anything (a real schema, garbage, another
record, an error). Through the public API only (AvroSerde.encode / decode / decode_as).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import DecodeError
from services.common.schemas import SCHEMA_NAMES, LoadedSchema, default_schema_set
from services.common.serde import AvroSerde
from tests.fuzz.avro_records import records
from tests.fuzz.fuzzing import FUZZ, ran

SCHEMAS = default_schema_set()
VERSIONS: list[LoadedSchema] = [
    loaded for name in SCHEMA_NAMES for loaded in [*SCHEMAS.history(name), SCHEMAS.current(name)]
]
SERDE = AvroSerde(SCHEMAS)


def single_object(writer: LoadedSchema, record: dict[str, Any]) -> bytes:
    """A record written with `writer` (any released version) in single-object encoding."""
    out = io.BytesIO()
    out.write(b"\xc3\x01" + writer.fingerprint)
    schemaless_writer(out, writer.parsed, record)
    return out.getvalue()


def decodes_or_refuses(serde: AvroSerde, data: bytes, expected: str | None = None) -> None:
    """The property: a (name, dict) of one of our schemas, or DecodeError with a reason."""
    try:
        name, record = serde.decode(data, expected)
    except DecodeError as exc:
        assert exc.reason
        return
    assert name in SCHEMA_NAMES
    assert isinstance(record, dict)
    if expected is not None:
        assert name == expected


@st.composite
def valid_encodings(draw: st.DrawFn) -> tuple[LoadedSchema, bytes]:
    writer = draw(st.sampled_from(VERSIONS))
    return writer, single_object(writer, draw(records(writer.raw)))


@st.composite
def mutated(draw: st.DrawFn, encodings: st.SearchStrategy[tuple[LoadedSchema, bytes]]) -> bytes:
    _, data = draw(encodings)
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "append"]))
        if op == "truncate":
            del buf[draw(st.integers(0, len(buf))):]
        elif op == "flip" and buf:
            at = draw(st.integers(0, len(buf) - 1))
            buf[at] = draw(st.integers(0, 255))
        elif op == "insert":
            at = draw(st.integers(0, len(buf)))
            buf[at:at] = draw(st.binary(min_size=1, max_size=9))
        else:  # a varint that claims a huge length or count, then anything
            buf += draw(st.sampled_from([b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                                         b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
                                         b"\x01", b"\x00"])) + draw(st.binary(max_size=8))
    return bytes(buf)


@FUZZ
@given(encoding=valid_encodings())
def test_every_released_version_round_trips(encoding: tuple[LoadedSchema, bytes]) -> None:
    """Sanity of the generator and the resolution: a valid record of any version decodes."""
    ran("serde: valid records, every version")
    writer, data = encoding
    name, record = SERDE.decode(data)
    assert name == writer.name
    assert isinstance(record, dict)


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    ran("serde: arbitrary bytes")
    decodes_or_refuses(SERDE, data)


@FUZZ
@given(writer=st.sampled_from(VERSIONS), body=st.binary(max_size=300),
       expected=st.none() | st.sampled_from(SCHEMA_NAMES))
def test_known_fingerprint_arbitrary_body(writer: LoadedSchema, body: bytes,
                                          expected: str | None) -> None:
    ran("serde: single-object header + arbitrary body")
    decodes_or_refuses(SERDE, b"\xc3\x01" + writer.fingerprint + body, expected)


@FUZZ
@given(data=mutated(valid_encodings()))
def test_mutated_valid_records(data: bytes) -> None:
    ran("serde: mutated single-object records")
    decodes_or_refuses(SERDE, data)


@dataclass
class _Answer:
    schema_str: str


class AnsweringRegistry:
    """A schema registry (the serde's RegistryClient seam) answering whatever the test drew."""

    def __init__(self, answer: str | Exception) -> None:
        self.answer = answer

    def register_schema(self, subject_name: str, schema: Any) -> int:
        raise AssertionError("decoding never registers")

    def get_schema(self, schema_id: int) -> _Answer:
        if isinstance(self.answer, Exception):
            raise self.answer
        return _Answer(self.answer)


REAL_SCHEMAS = st.sampled_from(VERSIONS).map(lambda v: json.dumps(v.raw))
REGISTRY_ERRORS = st.sampled_from([ConnectionError("registry down"), KeyError(7),
                                   ValueError("bad answer")])


def _malformed_schemas() -> st.SearchStrategy[str]:
    """Registry answers that are not a usable Avro schema of ours (JSON or not)."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                     max_size=3),
        max_leaves=8,
    ).map(json.dumps)
    same_name_wrong_shape = st.sampled_from(SCHEMA_NAMES).flatmap(
        lambda name: st.fixed_dictionaries({
            "type": st.sampled_from(["record", "enum", "string", "nonsense"]),
            "name": st.just(name),
            "namespace": st.just("io.mdmpush.v1"),
            "fields": st.lists(st.fixed_dictionaries({
                "name": st.text(min_size=1, max_size=6),
                "type": st.sampled_from(["string", "long", "null", "wrong", ["null", "int"]]),
            }), max_size=3),
        }).map(json.dumps))
    return st.one_of(json_values, same_name_wrong_shape, st.text(max_size=30))


@FUZZ
@given(answer=REAL_SCHEMAS | REGISTRY_ERRORS, schema_id=st.integers(0, 2**32 - 1),
       body=st.binary(max_size=200))
def test_confluent_framing_any_body(answer: str | Exception, schema_id: int,
                                    body: bytes) -> None:
    ran("serde: Confluent header + arbitrary body")
    serde = AvroSerde(SCHEMAS, registry=AnsweringRegistry(answer))
    decodes_or_refuses(serde, b"\x00" + schema_id.to_bytes(4, "big") + body)


@FUZZ
@given(answer=_malformed_schemas(), schema_id=st.integers(0, 2**32 - 1),
       body=st.binary(max_size=50))
def test_confluent_framing_malformed_registry_schema(answer: str, schema_id: int,
                                                     body: bytes) -> None:
    """R-FUZZ-1 (fixed by hotpath in 48c160a): such answers escaped as AttributeError."""
    ran("serde: Confluent header + malformed registry schema")
    serde = AvroSerde(SCHEMAS, registry=AnsweringRegistry(answer))
    decodes_or_refuses(serde, b"\x00" + schema_id.to_bytes(4, "big") + body)


@FUZZ
@given(encoding=valid_encodings(), schema_id=st.integers(1, 2**31), data=st.data())
def test_confluent_framing_mutated(encoding: tuple[LoadedSchema, bytes], schema_id: int,
                                   data: st.DataObject) -> None:
    ran("serde: mutated Confluent records")
    writer, single = encoding
    serde = AvroSerde(SCHEMAS, registry=AnsweringRegistry(json.dumps(writer.raw)))
    framed = b"\x00" + schema_id.to_bytes(4, "big") + single[10:]
    decodes_or_refuses(serde, framed)  # valid: decodes
    decodes_or_refuses(serde, data.draw(mutated(st.just((writer, framed)))))


@pytest.mark.parametrize("data", [None, b"", b"\x00", b"\xc3", b"\xc3\x01\x00", b"\x00\x00\x00"])
def test_short_inputs_say_why(data: bytes | None) -> None:
    with pytest.raises(DecodeError, match=r"empty|truncated|no registry|unknown"):
        SERDE.decode(data)
