"""The compiled Avro codecs against fastavro: same bytes, same values, same refusals.

`AvroSerde()` takes the compiled codecs (services/common/avro_codec.py) for current-schema
records and falls back to fastavro for whatever they refuse; `AvroSerde(compiled=False)` is
fastavro alone, the reference. Records are generated from each shipped `.avsc` (hypothesis), then
encoded, decoded, mutated byte by byte and given wrong-typed fields: both serdes must agree on
every one, down to the error's reason.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common import serde as serde_module
from services.common.avro_codec import compile_codec
from services.common.errors import DecodeError, EncodeError, SerdeError
from services.common.schemas import SCHEMA_NAMES, default_schema_set
from services.common.serde import SINGLE_OBJECT_MAGIC, AvroSerde

FAST = AvroSerde()
REFERENCE = AvroSerde(compiled=False)
JOB = {
    "job_id": "r/E1", "request_id": "r", "tenant": "acme", "enrollment_id": "E1",
    "lane": "BULK", "kind": "MDM", "topic": "com.apple.mgmt.x", "token_hex": "ab" * 32,
    "push_magic": "m", "aps_payload": None, "expiration": None, "command_type": "",
    "token_updated_at": 1_795_000_000_000, "created_at": 1_795_000_000_001, "attempt": 2,
    "repush": 0, "last_error": None,
}
EXAMPLES = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def records_of(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for an Avro schema (the `.avsc` JSON), epoch-ms timestamps as ints."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return records_of(named[schema], named)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": st.integers(-(2**63), 2**63 - 1),
            "float": st.floats(width=32, allow_nan=False),
            "double": st.floats(allow_nan=False),
            "string": st.text(max_size=300),
        }[schema]
    if isinstance(schema, list):
        return st.one_of(*(records_of(branch, named) for branch in schema))
    kind = schema["type"]
    if kind in ("record", "enum"):
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: records_of(f["type"], named) for f in schema["fields"]})
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(records_of(schema["items"], named), max_size=5)
    if kind == "map":
        return st.dictionaries(st.text(max_size=20), records_of(schema["values"], named),
                               max_size=5)
    return records_of(kind, named)


def schema_and_record() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    return st.sampled_from(SCHEMA_NAMES).flatmap(
        lambda name: st.tuples(st.just(name), records_of(default_schema_set().current(name).raw)))


def outcome(serde: AvroSerde, action: Any) -> tuple[str, Any]:
    """What a serde call gave: ("ok", value) or ("error", type and reason)."""
    try:
        return "ok", action(serde)
    except SerdeError as exc:  # fastavro's messages may name a BytesIO object by its address
        return "error", (type(exc).__name__, re.sub(r" at 0x[0-9a-f]+", "", exc.reason))


def test_every_shipped_schema_compiles() -> None:
    """The hot path is real: no shipped schema is left to fastavro alone."""
    for name in SCHEMA_NAMES:
        assert compile_codec(default_schema_set().current(name).raw) is not None, name


@EXAMPLES
@given(schema_and_record())
def test_same_bytes_and_values_as_fastavro(case: tuple[str, dict[str, Any]]) -> None:
    name, record = case
    data = FAST.encode(name, record)
    assert data == REFERENCE.encode(name, record)
    assert FAST.decode(data) == REFERENCE.decode(data) == (name, record)


def test_compiled_path_needs_no_fastavro(monkeypatch: pytest.MonkeyPatch) -> None:
    """Current-schema records are encoded and decoded without fastavro at all."""
    def refuse(*_args: Any) -> None:
        raise AssertionError("fastavro was used")

    monkeypatch.setattr(serde_module, "schemaless_writer", refuse)
    monkeypatch.setattr(serde_module, "schemaless_reader", refuse)
    assert FAST.decode_as(FAST.encode("PushJob", JOB), "PushJob") == JOB


def test_missing_fields_take_their_defaults() -> None:
    record = {"job_id": "r/E1", "request_id": "r", "tenant": "acme", "enrollment_id": "E1",
              "state": "SENT", "at": 1_795_000_000_000}
    data = FAST.encode("PushOutcome", record)
    assert data == REFERENCE.encode("PushOutcome", record)
    assert FAST.decode_as(data, "PushOutcome")["attempt"] == 0


def test_nan_and_infinities_encode_alike() -> None:
    base = {"job_id": "j", "request_id": "r", "tenant": "t", "enrollment_id": "e",
            "state": "SENT", "at": 1}
    for value in (math.nan, math.inf, -math.inf, -0.0):
        record = {**base, "latency_ms": value}
        data = FAST.encode("PushOutcome", record)
        assert data == REFERENCE.encode("PushOutcome", record)
        decoded = FAST.decode_as(data, "PushOutcome")["latency_ms"]
        assert math.isnan(decoded) if math.isnan(value) else decoded == value


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("append"), st.just(0), st.integers(0, 255)),
)


def mutate(data: bytes, how: tuple[str, int, int]) -> bytes:
    kind, where, byte = how
    # The header stays intact (mostly): the point is the body, where the codecs differ.
    at = 10 + where % max(1, len(data) - 10)
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ byte]) + data[at + 1:] if at < len(data) else data
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + bytes([byte]) + data[at:]
    return data + bytes([byte])


@EXAMPLES
@given(schema_and_record(), st.lists(MUTATIONS, min_size=1, max_size=3))
def test_mutated_bytes_get_the_same_verdict(case: tuple[str, dict[str, Any]],
                                            mutations: list[tuple[str, int, int]]) -> None:
    """Malformed bodies are refused with fastavro's typed error and reason; bodies that are
    still valid decode to the same values."""
    name, record = case
    data = REFERENCE.encode(name, record)
    for how in mutations:
        data = mutate(data, how)
    fast, reference = outcome(FAST, lambda s: s.decode(data)), outcome(REFERENCE,
                                                                        lambda s: s.decode(data))
    if fast[0] == "ok" and reference[0] == "ok":
        # NaN != NaN: compare what the values encode to.
        assert REFERENCE.encode(*fast[1]) == REFERENCE.encode(*reference[1])
    else:
        assert fast == reference


WRONG_VALUES = st.sampled_from(
    [None, True, False, 0, -1, 2**31, 2**63, -(2**63) - 1, 1.5, 1e300, "", "x", "PRIORITY",
     b"bytes", [], {}, ["x"], {"k": "v"}, float("nan")]
)


@EXAMPLES
@given(schema_and_record(), st.data())
def test_wrong_typed_fields_get_the_same_verdict(case: tuple[str, dict[str, Any]],
                                                 data: st.DataObject) -> None:
    """A field of the wrong type is either written as fastavro writes it or refused with the
    same EncodeError; a missing field likewise."""
    name, record = case
    field = data.draw(st.sampled_from(sorted(record)))
    broken = dict(record)
    if data.draw(st.booleans()):
        del broken[field]
    else:
        broken[field] = data.draw(WRONG_VALUES)
    fast = outcome(FAST, lambda s: s.encode(name, broken))
    assert fast == outcome(REFERENCE, lambda s: s.encode(name, broken))
    if fast[0] == "error":
        assert fast[1][0] == EncodeError.__name__


def test_garbage_after_a_valid_header_is_a_decode_error() -> None:
    header = FAST.encode("PushJob", JOB)[:10]
    for body in (b"", b"\xff" * 12, b"\x02\x41", b"\x01"):
        with pytest.raises(DecodeError) as fast:
            FAST.decode(header + body)
        with pytest.raises(DecodeError) as reference:
            REFERENCE.decode(header + body)
        assert fast.value.reason == reference.value.reason


OLDER_VERSIONS = [(name, old) for name in SCHEMA_NAMES for old in default_schema_set().history(name)
                  if old.fingerprint != default_schema_set().current(name).fingerprint]


@pytest.mark.skipif(not OLDER_VERSIONS, reason="no released version differs from the current")
@EXAMPLES
@given(st.data())
def test_older_writer_versions_still_resolve(data: st.DataObject) -> None:
    """History versions are not compiled: fastavro resolves them against the current schema."""
    name, old = data.draw(st.sampled_from(OLDER_VERSIONS))
    record = data.draw(records_of(old.raw))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    wire = SINGLE_OBJECT_MAGIC + old.fingerprint + body.getvalue()
    assert FAST.decode(wire) == REFERENCE.decode(wire)
    assert FAST.decode(wire)[0] == name
