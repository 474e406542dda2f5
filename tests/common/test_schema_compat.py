"""Every schema stays readable for data written by each released version (schemas/history)."""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest

from services.common.schemas import (
    SCHEMA_NAMES,
    LoadedSchema,
    SchemaSet,
    default_schema_set,
    parse_schema,
    schemas_dir,
)
from services.common.serde import AvroSerde
from tests.support.compat import backward_incompatibilities
from tests.support.samples import SAMPLES


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_current_reads_every_released_version(name: str) -> None:
    schemas = default_schema_set()
    history = schemas.history(name)
    assert history, f"schemas/history/{name}/ must hold the released versions"
    for old in history:
        assert backward_incompatibilities(old, schemas.current(name)) == []


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_current_schema_is_released(name: str) -> None:
    """A change to a schema must be released as a new history version (and so be checked)."""
    schemas = default_schema_set()
    assert schemas.history(name)[-1].canonical == schemas.current(name).canonical


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_field_is_documented(name: str) -> None:
    raw = default_schema_set().current(name).raw
    assert raw.get("namespace") == "io.mdmpush.v1" and raw.get("doc")
    undocumented = [f["name"] for f in raw["fields"] if not f.get("doc")]
    assert undocumented == []


def _changed(name: str, mutate: Callable[[dict[str, Any]], None]) -> LoadedSchema:
    raw = copy.deepcopy(default_schema_set().current(name).raw)
    mutate(raw)
    return parse_schema(raw, name, None)


def test_checker_flags_a_field_added_without_default() -> None:
    old = default_schema_set().current("PushJob")
    new = _changed("PushJob", lambda r: r["fields"].append(
        {"name": "shard", "type": "int", "doc": "x"}))
    assert any("shard" in p for p in backward_incompatibilities(old, new))


def test_checker_flags_a_removed_enum_symbol() -> None:
    old = default_schema_set().current("PushOutcome")

    def drop_skipped(raw: dict[str, Any]) -> None:
        enum = next(f for f in raw["fields"] if f["name"] == "state")["type"]
        enum["symbols"].remove("SKIPPED")

    new = _changed("PushOutcome", drop_skipped)
    assert any("SKIPPED" in p for p in backward_incompatibilities(old, new))


def test_checker_accepts_a_field_added_with_default() -> None:
    old = default_schema_set().current("PushJob")
    new = _changed("PushJob", lambda r: r["fields"].append(
        {"name": "shard", "type": "int", "default": 0, "doc": "x"}))
    assert backward_incompatibilities(old, new) == []


def test_old_writer_bytes_decode_with_current_reader(tmp_path: Path) -> None:
    """Single-object bytes of an older released version resolve to the current schema."""
    shutil.copytree(schemas_dir(), tmp_path / "schemas")
    old_raw = copy.deepcopy(default_schema_set().current("PushJob").raw)
    old_raw["fields"] = [f for f in old_raw["fields"] if f["name"] != "repush"]
    (tmp_path / "schemas" / "history" / "PushJob" / "0.avsc").write_text(json.dumps(old_raw))
    serde = AvroSerde(SchemaSet(tmp_path / "schemas"))
    old = serde.schemas.history("PushJob")[0]

    record = {k: v for k, v in SAMPLES["PushJob"].items() if k != "repush"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    data = b"\xc3\x01" + old.fingerprint + body.getvalue()
    assert serde.decode_as(data, "PushJob") == dict(record, repush=0)
