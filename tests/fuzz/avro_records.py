"""Hypothesis strategies for records of any Avro schema (the shipped schemas and their history).

Generated from the schema JSON itself, so a new field or schema is fuzzed without touching the
tests: records, enums, arrays, maps, unions, named-type references and the primitive types.
Timestamps are epoch-millisecond ints, as the serde keeps them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "long": _LONG,
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "string": st.text(max_size=40),
    "bytes": st.binary(max_size=40),
}


def records(schema: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Records valid for `schema` (a parsed-from-JSON Avro record schema)."""
    return _strategy(schema, {}, schema.get("namespace", ""))


def _strategy(schema: Any, named: dict[str, Any], namespace: str) -> st.SearchStrategy[Any]:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = schema if "." in schema else f"{namespace}.{schema}"
        return st.deferred(lambda: _strategy(named.get(full, named.get(schema)), named, namespace))
    if isinstance(schema, list):
        return st.one_of([_strategy(branch, named, namespace) for branch in schema])
    kind = schema["type"]
    if kind in _PRIMITIVES:  # {"type": "long", "logicalType": ...}
        return _PRIMITIVES[kind]
    namespace = schema.get("namespace", namespace)
    if kind in ("record", "enum", "fixed"):
        named[f"{namespace}.{schema['name']}"] = schema
        named[schema["name"]] = schema
    if kind == "record":
        fields = {f["name"]: _strategy(f["type"], named, namespace) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(_strategy(schema["items"], named, namespace), max_size=5)
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), _strategy(schema["values"], named, namespace),
                               max_size=5)
    raise ValueError(f"unsupported Avro type {kind!r}")
