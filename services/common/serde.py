"""Avro on the wire, in two formats, with one decoder for both.

- Confluent Schema Registry format (`00` + 4-byte schema id + body) when a registry is configured.
- Avro single-object encoding (`C3 01` + 8-byte CRC-64-AVRO fingerprint + body) otherwise,
  resolved against the schemas shipped in `schemas/` (every released version is known).

Records whose writer schema is the current one go through codecs compiled from the `.avsc`
(avro_codec.py: two to three times cheaper than fastavro's schemaless reader and writer, which
walk the schema per record); anything those refuse, and every older writer schema, goes through
fastavro with cached parsed schemas, which gives the same bytes and values or the typed error.
The stock registry deserializer, which re-resolves per message, is several times slower still.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any, Protocol

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from services.common.avro_codec import RecordCodec, compile_codec
from services.common.errors import DecodeError, EncodeError
from services.common.schemas import (
    SCHEMA_NAMES,
    LoadedSchema,
    SchemaSet,
    default_schema_set,
    parse_schema,
)
from services.common.settings import KafkaSettings

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = struct.Struct(">bI")

# Timestamps stay epoch milliseconds (ints) in memory, as Kafka's own timestamps are: building a
# datetime per field per record costs more than the rest of the decode. Writers accept ints.
fastavro.read.LOGICAL_READERS.pop("long-timestamp-millis", None)


class RegistryClient(Protocol):
    """The part of confluent-kafka's SchemaRegistryClient this module uses."""

    def register_schema(self, subject_name: str, schema: Any) -> int: ...

    def get_schema(self, schema_id: int) -> Any: ...


class AvroSerde:
    """Encodes records of the shipped schemas and decodes either wire format.

    Without a registry it writes single-object encoding; with one it registers the schema under
    `<topic>-value` (TopicNameStrategy) once and writes the Confluent format.
    """

    def __init__(
        self,
        schemas: SchemaSet | None = None,
        registry: RegistryClient | None = None,
        *,
        compiled: bool = True,
    ) -> None:
        """`compiled=False` leaves every record to fastavro (the reference the compiled codecs
        are tested and benchmarked against)."""
        self.schemas = schemas or default_schema_set()
        self.registry = registry
        self._registered: dict[tuple[str, str], int] = {}
        self._by_registry_id: dict[int, LoadedSchema] = {}
        #: Compiled codec per current schema name (None: that schema is fastavro's alone).
        self._codecs: dict[str, RecordCodec | None] = {}
        #: Wire header (single-object: 10 bytes; Confluent: 5) of a current schema -> its codec.
        self._fast_single: dict[bytes, RecordCodec] = {}
        self._fast_confluent: dict[bytes, RecordCodec] = {}
        for name in SCHEMA_NAMES if compiled else ():
            codec = self._codecs[name] = compile_codec(self.schemas.current(name).raw)
            if codec is not None:
                self._fast_single[SINGLE_OBJECT_MAGIC + self.schemas.current(name).fingerprint] = (
                    codec)

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, name: str, record: dict[str, Any], topic: str | None = None) -> bytes:
        """Serialise `record` with the current schema `name`."""
        schema = self.schemas.current(name)
        if self.registry is not None:
            if topic is None:
                raise EncodeError("a topic is needed to register the schema in the registry")
            header = _CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, self._schema_id(topic, schema))
        else:
            header = SINGLE_OBJECT_MAGIC + schema.fingerprint
        codec = self._codecs.get(name)
        if codec is not None:
            try:
                return codec.encode(record, header)
            except Exception:  # not the compiled codec's to judge: fastavro's
                pass
        out = io.BytesIO()
        out.write(header)
        try:
            schemaless_writer(out, schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{name}: record does not match the schema: {exc}") from exc
        return out.getvalue()

    def _schema_id(self, topic: str, schema: LoadedSchema) -> int:
        key = (topic, schema.name)
        if key not in self._registered:
            from confluent_kafka.schema_registry import Schema

            assert self.registry is not None
            schema_id = self.registry.register_schema(
                f"{topic}-value", Schema(json.dumps(schema.raw), "AVRO")
            )
            self._registered[key] = schema_id
            self._by_registry_id[schema_id] = schema
            self._remember_confluent(schema_id, schema)
        return self._registered[key]

    def _remember_confluent(self, schema_id: int, writer: LoadedSchema) -> None:
        """Records under `schema_id` take the compiled codec if it names a current schema."""
        if writer.fingerprint == self.schemas.current(writer.name).fingerprint:
            codec = self._codecs.get(writer.name)
            if codec is not None:
                self._fast_confluent[_CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, schema_id)] = codec

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, data: bytes | None, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Return (schema name, record) from either wire format, or raise DecodeError.

        `expected` names the schema the topic should carry; another one is an error.
        """
        if not data:
            raise DecodeError("empty record value")
        fast = self._fast_single.get(data[:10])
        offset = 10
        if fast is None and data[0] == CONFLUENT_MAGIC:
            fast, offset = self._fast_confluent.get(data[:5]), 5
        if fast is not None and (expected is None or fast.name == expected):
            try:
                return fast.name, fast.decode(data, offset)
            except Exception:  # fastavro below gives the verdict and its reason
                pass
        if data[:2] == SINGLE_OBJECT_MAGIC:
            writer, reader, offset = self._single_object_schemas(data)
        elif data[0] == CONFLUENT_MAGIC:
            writer, reader, offset = self._confluent_schemas(data)
        else:
            raise DecodeError(f"unknown wire format: first bytes {data[:2].hex()}")
        if expected is not None and reader.name != expected:
            raise DecodeError(f"expected a {expected} record, got {reader.name}")
        record = _read_body(data, offset, writer, reader)
        return reader.name, record

    def decode_as(self, data: bytes | None, name: str) -> dict[str, Any]:
        """Decode a record that must be of schema `name`."""
        return self.decode(data, expected=name)[1]

    def _single_object_schemas(self, data: bytes) -> tuple[Any, LoadedSchema, int]:
        if len(data) < 10:
            raise DecodeError(f"truncated single-object header ({len(data)} bytes)")
        writer = self.schemas.by_fingerprint(data[2:10])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:10].hex()}")
        reader = self.schemas.current(writer.name)
        return (None if writer is reader else writer.parsed), reader, 10

    def _confluent_schemas(self, data: bytes) -> tuple[Any, LoadedSchema, int]:
        if len(data) < 5:
            raise DecodeError(f"truncated Confluent header ({len(data)} bytes)")
        schema_id = _CONFLUENT_HEADER.unpack_from(data)[1]
        writer = self._by_registry_id.get(schema_id)
        if writer is None:
            writer = self._fetch_registry_schema(schema_id)
        reader = self.schemas.current(writer.name)
        return (None if writer.fingerprint == reader.fingerprint else writer.parsed), reader, 5

    def _fetch_registry_schema(self, schema_id: int) -> LoadedSchema:
        if self.registry is None:
            raise DecodeError(f"Confluent-format record (schema id {schema_id}) but no registry")
        try:
            raw = json.loads(self.registry.get_schema(schema_id).schema_str)
        except Exception as exc:  # the registry client raises several unrelated types
            raise DecodeError(f"schema id {schema_id} not resolvable: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise DecodeError(f"schema id {schema_id} is not an Avro record schema")
        known = self.schemas.by_fullname(_fullname(raw))
        if known is None:
            raise DecodeError(f"schema id {schema_id} is {_fullname(raw)}, not one of ours")
        try:
            writer = parse_schema(raw, known.name)
        except Exception as exc:  # fastavro raises several unrelated types for a bad schema
            raise DecodeError(
                f"schema id {schema_id} is not a usable Avro record schema: {exc}") from exc
        self._by_registry_id[schema_id] = writer
        self._remember_confluent(schema_id, writer)
        return writer


def _fullname(raw: dict[str, Any]) -> str:
    return f"{raw.get('namespace', '')}.{raw.get('name', '')}"


def _read_body(data: bytes, offset: int, writer: Any, reader: LoadedSchema) -> dict[str, Any]:
    bio = io.BytesIO(data)
    bio.seek(offset)
    try:
        if writer is None:
            record = schemaless_reader(bio, reader.parsed, None)
        else:
            record = schemaless_reader(bio, writer, reader.parsed)
    except (EOFError, StopIteration, ValueError, IndexError, KeyError, TypeError) as exc:
        raise DecodeError(f"{reader.name}: undecodable body: {type(exc).__name__}: {exc}") from exc
    except fastavro.read.SchemaResolutionError as exc:
        raise DecodeError(f"{reader.name}: writer schema not resolvable: {exc}") from exc
    if not isinstance(record, dict):
        raise DecodeError(f"{reader.name}: body is not a record")
    if bio.tell() != len(data):
        raise DecodeError(f"{reader.name}: {len(data) - bio.tell()} trailing bytes after record")
    return record


def serde_for(settings: KafkaSettings) -> AvroSerde:
    """The serde for the deployment's wire format (Schema Registry when one is configured)."""
    auth = settings.schema_registry_basic_auth
    return make_serde(settings.schema_registry_url, auth.get_secret_value() if auth else None)


def make_serde(registry_url: str | None, basic_auth: str | None = None) -> AvroSerde:
    """A serde for the configured wire format (registry when a URL is given)."""
    if not registry_url:
        return AvroSerde()
    from confluent_kafka.schema_registry import SchemaRegistryClient

    conf: dict[str, str] = {"url": registry_url}
    if basic_auth:
        conf["basic.auth.user.info"] = basic_auth
    return AvroSerde(registry=SchemaRegistryClient(conf))


Decoder = Callable[[bytes | None], dict[str, Any]]
