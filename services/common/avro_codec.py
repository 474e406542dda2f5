"""Avro binary codecs compiled from the shipped schemas into plain Python, for the hot paths.

fastavro's schemaless reader and writer walk the parsed schema for every record (a dispatch per
field, a BytesIO per call): for the sender's records that costs more than the rest of a push's
Python work. `compile_codec` turns one record schema into two straight-line functions, generated
as source once at import time (the field list comes from the `.avsc`, so a new schema version
needs no code change): no schema walk, no dispatch, no stream object per record.

The compiled functions are a fast path, never a second authority on the format: they only take
canonical, in-range input, and whatever they do not take they refuse by raising (any
exception). The serde then does exactly what it did before, with fastavro, which either succeeds
or raises the serde's typed error. So a record one path accepts the other accepts with the same
bytes and values (`tests/common/test_avro_codec.py` checks it on generated and mutated records),
and malformed input still gets fastavro's verdict and message.

Supported: records, enums, strings, booleans, ints, longs (timestamp-millis stays an int, as
serde.py reads it), floats, doubles, arrays and maps of non-null items, and `["null", X]`
unions. Any other construct (other unions, bytes, fixed, other logical types) makes
`compile_codec` return None: that schema keeps fastavro alone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Encoder = Callable[[Any, bytes], bytes]
Decoder = Callable[[bytes, int], dict[str, Any]]

_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
#: Zig-zag varints of 0..N-1 (string lengths, small ints), precomputed: one index per value.
_SMALL = 8192


def _varint(zigzagged: int) -> bytes:
    out = bytearray()
    while zigzagged > 0x7F:
        out.append((zigzagged & 0x7F) | 0x80)
        zigzagged >>= 7
    out.append(zigzagged)
    return bytes(out)


_POSITIVE = tuple(_varint(n << 1) for n in range(_SMALL))


_LONGS: dict[int, bytes] = {}
"""Varints of recent large longs: timestamps repeat (every outcome of one millisecond has the same
`at`, a job's times are copied to its outcome), and a 6-byte varint costs a loop in Python."""
_LONGS_KEPT = 4096


def _long(value: int) -> bytes:
    """A long's zig-zag varint; refuses what is not an int in the long range."""
    if type(value) is not int or not _LONG_MIN <= value <= _LONG_MAX:
        raise TypeError(f"not a long: {value!r}")
    if 0 <= value < _SMALL:
        return _POSITIVE[value]
    encoded = _LONGS.get(value)
    if encoded is None:
        if len(_LONGS) >= _LONGS_KEPT:
            _LONGS.clear()
        encoded = _LONGS[value] = _varint((value << 1) ^ (value >> 63))
    return encoded


def _int(value: int) -> bytes:
    """An int's zig-zag varint; refuses what is not an int in the int range."""
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise TypeError(f"not an int: {value!r}")
    if 0 <= value < _SMALL:
        return _POSITIVE[value]
    return _varint((value << 1) ^ (value >> 63))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A multi-byte varint at `pos` (still zig-zagged) and the position after it; refuses more
    than 10 bytes or 64 bits (fastavro reads into 64 bits: beyond that, it decides). Unrolled:
    timestamps take 6 bytes, and a loop costs twice as much in Python."""
    byte = data[pos]
    result = byte & 0x7F
    shift = 7
    pos += 1
    while byte & 0x80:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise ValueError("varint longer than 10 bytes")
    if result >> 64:
        raise ValueError("varint beyond 64 bits")
    return result, pos


class Unsupported(Exception):
    """The schema uses a construct the compiler does not handle: fastavro only."""


@dataclass(frozen=True, slots=True)
class RecordCodec:
    """The compiled functions of one record schema.

    `encode(record, header)` returns `header` + the record's body; `decode(data, offset)`
    returns the record whose body fills `data` from `offset` to its end. Both raise (any
    exception) on anything they do not take: the caller falls back to fastavro.
    """

    name: str
    encode: Encoder
    decode: Decoder
    source: str


def compile_codec(schema: dict[str, Any]) -> RecordCodec | None:
    """Compile a record schema (the `.avsc` JSON); None if it uses an unsupported construct."""
    try:
        return _Compiler(schema).build()
    except Unsupported:
        return None


class _Compiler:
    """Writes the source of one encoder and one decoder, then execs it once."""

    def __init__(self, schema: dict[str, Any]) -> None:
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise Unsupported("not a record schema")
        self.schema = schema
        self.named: dict[str, dict[str, Any]] = {}
        self.consts: dict[str, Any] = {}
        self.counter = 0

    def build(self) -> RecordCodec:
        enc: list[str] = ["def encode(r, head):", "    out = [head]", "    a = out.append"]
        self.encode_record(self.schema, "r", enc, "    ", "")
        enc.append("    return b''.join(out)")
        dec: list[str] = ["def decode(b, p):", "    L = len(b)"]
        result = self.decode_value(self.schema, dec, "    ", "")
        dec += ["    if p != L:", "        raise ValueError('trailing bytes')",
                f"    return {result}"]
        source = "\n".join(enc + dec) + "\n"
        namespace: dict[str, Any] = {
            "_long": _long, "_int": _int, "_rv": _read_varint, "_P": _POSITIVE, "_S": _SMALL,
            "_pd": struct.Struct("<d").pack, "_pf": struct.Struct("<f").pack,
            "_ud": struct.Struct("<d").unpack_from, "_uf": struct.Struct("<f").unpack_from,
            **self.consts,
        }
        exec(compile(source, f"<avro codec {self.schema['name']}>", "exec"), namespace)
        return RecordCodec(self.schema["name"], namespace["encode"], namespace["decode"], source)

    # -- helpers ----------------------------------------------------------------------------------
    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def const(self, value: Any) -> str:
        name = self.fresh("_c")
        self.consts[name] = value
        return name

    def resolve(self, schema: Any, namespace: str) -> Any:
        """Named-type references become their definition; definitions are remembered."""
        if isinstance(schema, str):
            if schema in ("null", "boolean", "int", "long", "float", "double", "string"):
                return schema
            full = schema if "." in schema else f"{namespace}.{schema}" if namespace else schema
            for candidate in (full, schema):
                if candidate in self.named:
                    return self.named[candidate]
            raise Unsupported(f"type {schema!r}")
        if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
            ns = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name else f"{ns}.{name}" if ns else name
            if full in self.named and self.named[full] is not schema:
                raise Unsupported(f"named type {full} defined twice")
            self.named[full] = schema
        return schema

    @staticmethod
    def kind(schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        if isinstance(schema.get("type"), (dict, list)):
            raise Unsupported("nested type declaration")
        logical = schema.get("logicalType")
        if logical is not None and (logical, schema["type"]) != ("timestamp-millis", "long"):
            raise Unsupported(f"logical type {logical}")
        return str(schema["type"])

    def namespace_of(self, schema: dict[str, Any], outer: str) -> str:
        name = schema["name"]
        return name.rsplit(".", 1)[0] if "." in name else schema.get("namespace", outer)

    # -- encoder ----------------------------------------------------------------------------------
    def encode_record(self, schema: dict[str, Any], var: str, out: list[str], ind: str,
                      namespace: str) -> None:
        ns = self.namespace_of(schema, namespace)
        for field in schema["fields"]:
            value = self.fresh("v")
            if "default" in field:
                out.append(f"{ind}{value} = {var}.get({field['name']!r}, "
                           f"{self.const(field['default'])})")
            else:
                out.append(f"{ind}{value} = {var}[{field['name']!r}]")
            self.encode_value(field["type"], value, out, ind, ns)

    def encode_value(self, schema: Any, var: str, out: list[str], ind: str,
                     namespace: str) -> None:
        schema = self.resolve(schema, namespace)
        kind = self.kind(schema)
        if kind == "null":
            out += [f"{ind}if {var} is not None:", f"{ind}    raise TypeError('not null')"]
        elif kind == "boolean":
            out += [f"{ind}if {var} is True:", f"{ind}    a(b'\\x01')",
                    f"{ind}elif {var} is False:", f"{ind}    a(b'\\x00')",
                    f"{ind}else:", f"{ind}    raise TypeError('not a boolean')"]
        elif kind == "int":
            out.append(f"{ind}a(_int({var}))")
        elif kind == "long":
            out.append(f"{ind}a(_long({var}))")
        elif kind in ("float", "double"):
            pack = "_pf" if kind == "float" else "_pd"
            out += [f"{ind}if type({var}) is not float:",
                    f"{ind}    raise TypeError('not a float')", f"{ind}a({pack}({var}))"]
        elif kind == "string":
            encoded = self.fresh("s")
            out += [f"{ind}if type({var}) is not str:", f"{ind}    raise TypeError('not a str')",
                    f"{ind}{encoded} = {var}.encode()",
                    f"{ind}n = len({encoded})",
                    f"{ind}a(_P[n] if n < _S else _long(n))",
                    f"{ind}a({encoded})"]
        elif kind == "enum":
            table = self.const({s: _POSITIVE[i] for i, s in enumerate(schema["symbols"])})
            out += [f"{ind}if type({var}) is not str:", f"{ind}    raise TypeError('not a str')",
                    f"{ind}a({table}[{var}])"]
        elif kind == "record":
            out += [f"{ind}if type({var}) is not dict:", f"{ind}    raise TypeError('not a dict')"]
            self.encode_record(schema, var, out, ind, namespace)
        elif kind == "array":
            item = self.fresh("i")
            self.no_empty_items(schema["items"], namespace)
            out += [f"{ind}if type({var}) is not list:", f"{ind}    raise TypeError('not a list')",
                    f"{ind}if {var}:", f"{ind}    a(_long(len({var})))",
                    f"{ind}    for {item} in {var}:"]
            self.encode_value(schema["items"], item, out, ind + "        ", namespace)
            out.append(f"{ind}a(b'\\x00')")
        elif kind == "map":
            key, item = self.fresh("k"), self.fresh("i")
            self.no_empty_items(schema["values"], namespace)
            out += [f"{ind}if type({var}) is not dict:", f"{ind}    raise TypeError('not a dict')",
                    f"{ind}if {var}:", f"{ind}    a(_long(len({var})))",
                    f"{ind}    for {key}, {item} in {var}.items():"]
            self.encode_value("string", key, out, ind + "        ", namespace)
            self.encode_value(schema["values"], item, out, ind + "        ", namespace)
            out.append(f"{ind}a(b'\\x00')")
        elif kind == "union":
            branch = self.nullable(schema, namespace)
            out += [f"{ind}if {var} is None:", f"{ind}    a(b'\\x00')", f"{ind}else:",
                    f"{ind}    a(b'\\x02')"]
            self.encode_value(branch, var, out, ind + "    ", namespace)
        else:
            raise Unsupported(f"type {kind}")

    def nullable(self, schema: list[Any], namespace: str) -> Any:
        """The X of a `["null", X]` union (the only union compiled)."""
        if len(schema) != 2 or schema[0] != "null":
            raise Unsupported("union other than [null, X]")
        branch = self.resolve(schema[1], namespace)
        if self.kind(branch) in ("null", "union"):
            raise Unsupported("nested union")
        return branch

    def no_empty_items(self, schema: Any, namespace: str) -> None:
        """Items that may take no bytes would let a forged block count spin: fastavro only."""
        kind = self.kind(self.resolve(schema, namespace))
        if kind in ("null", "union", "record", "array", "map"):
            raise Unsupported(f"{kind} items")

    # -- decoder ----------------------------------------------------------------------------------
    def read_long(self, target: str, out: list[str], ind: str) -> None:
        """`target` = the zig-zag varint at p (single byte inline, longer ones by _rv)."""
        out += [f"{ind}{target} = b[p]", f"{ind}p += 1",
                f"{ind}if {target} & 0x80:", f"{ind}    {target}, p = _rv(b, p - 1)",
                f"{ind}{target} = ({target} >> 1) ^ -({target} & 1)"]

    def decode_value(self, schema: Any, out: list[str], ind: str, namespace: str) -> str:
        """Append code that reads one value at p; return the expression holding it."""
        schema = self.resolve(schema, namespace)
        kind = self.kind(schema)
        if kind == "null":
            return "None"
        var = self.fresh("x")
        if kind == "boolean":
            out += [f"{ind}{var} = b[p]", f"{ind}p += 1",
                    f"{ind}if {var} > 1:", f"{ind}    raise ValueError('not a boolean')",
                    f"{ind}{var} = {var} == 1"]
        elif kind in ("int", "long"):
            self.read_long(var, out, ind)
        elif kind in ("float", "double"):
            size, unpack = (4, "_uf") if kind == "float" else (8, "_ud")
            out += [f"{ind}{var} = {unpack}(b, p)[0]", f"{ind}p += {size}"]
        elif kind == "string":
            out += [f"{ind}n = b[p]", f"{ind}p += 1",
                    f"{ind}if n & 0x80:", f"{ind}    n, p = _rv(b, p - 1)",
                    f"{ind}if n & 1:", f"{ind}    raise ValueError('negative length')",
                    # No bound check: a slice past the end is short, but p then lies past it,
                    # and every later read (b[p], unpack_from, the final p != L) raises.
                    f"{ind}e = p + (n >> 1)",
                    f"{ind}{var} = b[p:e].decode()", f"{ind}p = e"]
        elif kind == "enum":
            # Keyed by the raw varint byte: negative or out-of-range indexes are not in it.
            if len(schema["symbols"]) > 64:
                raise Unsupported("enum index beyond one varint byte")
            table = self.const({2 * i: s for i, s in enumerate(schema["symbols"])})
            out += [f"{ind}{var} = {table}[b[p]]", f"{ind}p += 1"]
        elif kind == "record":
            ns = self.namespace_of(schema, namespace)
            values = []
            for field in schema["fields"]:
                value = self.decode_value(field["type"], out, ind, ns)
                values.append(f"{field['name']!r}: {value}")
            out.append(f"{ind}{var} = {{{', '.join(values)}}}")
        elif kind in ("array", "map"):
            count = self.fresh("c")
            out.append(f"{ind}{var} = {'[]' if kind == 'array' else '{}'}")
            out.append(f"{ind}while True:")
            inner = ind + "    "
            self.read_long(count, out, inner)
            out += [f"{inner}if not {count}:", f"{inner}    break",
                    f"{inner}if {count} < 0:", f"{inner}    {count} = -{count}"]
            self.read_long("_", out, inner + "    ")  # the block's byte size: not needed
            out.append(f"{inner}for _ in range({count}):")
            body = inner + "    "
            if kind == "array":
                self.no_empty_items(schema["items"], namespace)
                item = self.decode_value(schema["items"], out, body, namespace)
                out.append(f"{body}{var}.append({item})")
            else:
                self.no_empty_items(schema["values"], namespace)
                key = self.decode_value("string", out, body, namespace)
                item = self.decode_value(schema["values"], out, body, namespace)
                out.append(f"{body}{var}[{key}] = {item}")
        elif kind == "union":
            branch = self.nullable(schema, namespace)
            out += [f"{ind}{var} = b[p]", f"{ind}p += 1", f"{ind}if {var} == 0:",
                    f"{ind}    {var} = None", f"{ind}elif {var} == 2:"]
            value = self.decode_value(branch, out, ind + "    ", namespace)
            out += [f"{ind}    {var} = {value}", f"{ind}else:",
                    f"{ind}    raise ValueError('union index')"]
        else:
            raise Unsupported(f"type {kind}")
        return var
