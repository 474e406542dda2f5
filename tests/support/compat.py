"""Backward-compatibility check of an Avro schema change: can the new reader read old data?

Two layers: fastavro's own schema resolution applied to many generated records of the old
writer (catches type changes, missing defaults, removed symbols that occur), and static rules for
what random samples might miss (every added reader field has a default; every writer enum symbol
is known to the reader, or the reader enum has a default).
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
from fastavro.utils import generate_many

from services.common.schemas import LoadedSchema


def backward_incompatibilities(
    old: LoadedSchema, new: LoadedSchema, samples: int = 50
) -> list[str]:
    """Problems that stop `new` from reading data written with `old` (empty: compatible)."""
    problems = _static(old.raw, new.raw, path=new.name)
    for record in generate_many(old.parsed, samples):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, old.parsed, record)
        out.seek(0)
        try:
            fastavro.schemaless_reader(out, old.parsed, new.parsed)
        except Exception as exc:  # resolution errors come in several types
            problems.append(f"resolution failed: {type(exc).__name__}: {exc}")
            break
    return problems


def _static(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict) and old.get("type") == new.get("type"):
        if new["type"] == "record":
            old_fields = {f["name"]: f for f in old["fields"]}
            problems = []
            for field in new["fields"]:
                if field["name"] in old_fields:
                    problems += _static(old_fields[field["name"]]["type"], field["type"],
                                        f"{path}.{field['name']}")
                elif "default" not in field and not set(field.get("aliases", [])) & set(
                    old_fields
                ):
                    problems.append(f"{path}.{field['name']}: added without a default")
            return problems
        if new["type"] == "enum":
            missing = set(old["symbols"]) - set(new["symbols"])
            if missing and "default" not in new:
                return [f"{path}: enum symbols removed without a default: {sorted(missing)}"]
    if isinstance(old, list) and isinstance(new, list):
        problems = []
        for branch in old:
            match = next((b for b in new if _type_name(b) == _type_name(branch)), None)
            if match is None:
                problems.append(f"{path}: union branch {_type_name(branch)} removed")
            else:
                problems += _static(branch, match, path)
        return problems
    return []


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return str(schema)
