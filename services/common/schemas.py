"""The Avro schemas shipped in `schemas/`, parsed once, with every released version.

Each `.avsc` is self-contained (it defines the enums it uses), so a producer in any language needs
nothing but that file. `schemas/history/<Name>/<n>.avsc` keeps every released version: decoding
resolves an old writer's bytes against the current reader schema, and the compatibility test
checks each new version against all older ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_NAMES: tuple[str, ...] = (
    "NotificationRequest",
    "CheckinEvent",
    "DeviceRecord",
    "PushJob",
    "PushOutcome",
    "UnansweredPush",
    "PushPolicy",
    "EnrollmentActivity",
)


def schemas_dir() -> Path:
    """`MDMPUSH_SCHEMAS_DIR`, else the repository's `schemas/` next to `services/`."""
    override = os.environ.get("MDMPUSH_SCHEMAS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "schemas"


@dataclass(frozen=True, slots=True)
class LoadedSchema:
    """One version of one schema, parsed, with its single-object fingerprint."""

    name: str
    version: int | None  # None: the current file in schemas/
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, CRC-64-AVRO, little-endian (Avro single-object header)

    @property
    def canonical(self) -> str:
        return str(to_parsing_canonical_form(self.parsed))


def load_schema_file(path: Path, name: str, version: int | None) -> LoadedSchema:
    """Parse one `.avsc` in its own namespace of named types (files are self-contained)."""
    raw = json.loads(path.read_text())
    return parse_schema(raw, name, version)


def parse_schema(raw: dict[str, Any], name: str, version: int | None = None) -> LoadedSchema:
    """Parse a schema dict and compute its fingerprint."""
    parsed = fastavro.parse_schema(raw, named_schemas={})
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return LoadedSchema(name, version, raw, parsed, fp)


class SchemaSet:
    """Current schemas by name, and every version (current and history) by fingerprint."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._current: dict[str, LoadedSchema] = {}
        self._by_fingerprint: dict[bytes, LoadedSchema] = {}
        self._history: dict[str, list[LoadedSchema]] = {}
        for name in SCHEMA_NAMES:
            current = load_schema_file(directory / f"{name}.avsc", name, None)
            self._current[name] = current
            versions = sorted(
                (directory / "history" / name).glob("*.avsc"), key=lambda p: int(p.stem)
            )
            self._history[name] = [load_schema_file(p, name, int(p.stem)) for p in versions]
            for loaded in [*self._history[name], current]:
                self._by_fingerprint[loaded.fingerprint] = loaded

    def current(self, name: str) -> LoadedSchema:
        try:
            return self._current[name]
        except KeyError:
            raise KeyError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}") from None

    def history(self, name: str) -> list[LoadedSchema]:
        """Released versions, oldest first."""
        return list(self._history[name])

    def by_fingerprint(self, fp: bytes) -> LoadedSchema | None:
        return self._by_fingerprint.get(fp)

    def by_fullname(self, fullname: str) -> LoadedSchema | None:
        """Current schema whose record fullname (namespace.name) is `fullname`."""
        short = fullname.rsplit(".", 1)[-1]
        return self._current.get(short)


@cache
def default_schema_set() -> SchemaSet:
    """The shipped schemas, parsed once per process."""
    return SchemaSet(schemas_dir())
