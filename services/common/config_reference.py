"""docs/configuration.md, generated from the settings models themselves.

Every `BaseSettings` subclass under `services/` is found by reading the sources (not by importing
every module), then imported to read its fields: environment variable, type, default and meaning.
The meaning is the field's `description`, else its `#:` comment lines, else its attribute
docstring; a field with none of them reads "undocumented" and is listed by `undocumented()`.
Secrets (`SecretStr`) never show a default. Variables read straight from `os.environ` (the
local stack's paths and ports) are listed too, so the page names every `MDMPUSH_*` variable.

`mdmpush config reference` rewrites the page; tests/ops/test_config_reference.py fails when the
committed page differs from what this module generates.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

SERVICES = Path(__file__).resolve().parents[1]
REPO_ROOT = SERVICES.parent
DOC_PATH = REPO_ROOT / "docs" / "configuration.md"
UNDOCUMENTED = "undocumented"


@dataclass(frozen=True, slots=True)
class Setting:
    variable: str
    type: str
    default: str
    meaning: str


@dataclass(frozen=True, slots=True)
class SettingsModel:
    name: str
    source: str
    summary: str
    settings: tuple[Setting, ...]


@dataclass(frozen=True, slots=True)
class DirectVariable:
    variable: str
    sources: tuple[str, ...]


# -- discovery --------------------------------------------------------------------------------

def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SERVICES.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def settings_classes() -> list[type[BaseSettings]]:
    """Every class under services/ that derives from BaseSettings, in source order."""
    found: list[type[BaseSettings]] = []
    for path, tree in _sources():
        names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)
                 and any(_base_name(b) == "BaseSettings" for b in node.bases)]
        if names:
            module = importlib.import_module(_module_name(path))
            found += [getattr(module, name) for name in names]
    return found


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def direct_variables() -> list[DirectVariable]:
    """`MDMPUSH_*` names read with os.environ / os.getenv rather than through a model."""
    found: dict[str, set[str]] = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            name = _environ_read(node)
            if name is not None and name.startswith("MDMPUSH_"):
                found.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    return [DirectVariable(k, tuple(sorted(v))) for k, v in sorted(found.items())]


def _environ_read(node: ast.AST) -> str | None:
    """The constant name of `os.environ.get("X")`, `os.getenv("X")` or `os.environ["X"]`."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = ast.unparse(node.func)
        if func in ("os.environ.get", "os.getenv", "environ.get"):
            return str(node.args[0].value)
    if (isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)):
        return str(node.slice.value)
    return None


# -- one model --------------------------------------------------------------------------------

def field_comments(cls: type) -> dict[str, str]:
    """`#:` comment lines right above each field, or the string literal right after it."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    klass = ast.parse(source).body[0]
    body = klass.body if isinstance(klass, ast.ClassDef) else []
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        after = body[i + 1] if i + 1 < len(body) else None
        if (not comment and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            comment = [inspect.cleandoc(after.value.value)]
        if comment:
            docs[node.target.id] = " ".join(comment)
    return docs


def describe(cls: type[BaseSettings]) -> SettingsModel:
    prefix = str(cls.model_config.get("env_prefix", ""))
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseSettings) \
                and klass is not BaseSettings:
            comments.update(field_comments(klass))
    rows = tuple(
        Setting(
            variable=_variable(prefix, name, info),
            type=type_name(info.annotation),
            default=default_text(info),
            meaning=info.description or comments.get(name) or UNDOCUMENTED,
        )
        for name, info in cls.model_fields.items()
    )
    summary = inspect.cleandoc(cls.__doc__) if cls.__doc__ and "__doc__" in vars(cls) else ""
    source = str(Path(inspect.getfile(cls)).resolve().relative_to(REPO_ROOT))
    return SettingsModel(cls.__name__, source, summary, rows)


def _variable(prefix: str, name: str, info: FieldInfo) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return (alias or f"{prefix}{name}").upper()


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type (`int`, `path`, `one of a, b`, `list of int`)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = " or ".join(type_name(a) for a in present)
        return f"{inner}, optional" if len(present) < len(args) else inner
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (tuple, list, set, frozenset):
        return f"list of {type_name(args[0])} (JSON)" if args else "list (JSON)"
    if origin is dict:
        return (f"object of {type_name(args[0])} to {type_name(args[1])} (JSON)"
                if args else "object (JSON)")
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr):
            return "secret"
        if issubclass(annotation, Path):
            return "path"
        if issubclass(annotation, Enum):
            return "one of " + ", ".join(str(m.value) for m in annotation)
        return annotation.__name__
    return str(annotation)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def default_text(info: FieldInfo) -> str:
    if _is_secret(info.annotation):
        return "(secret: none shown)"
    if info.default_factory is not None:
        factory = getattr(info.default_factory, "__name__", "a function")
        return f"computed: `{factory}()`"
    value = info.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list | dict):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


# -- the page ---------------------------------------------------------------------------------

def print_help(summary: str, *classes: type[BaseSettings]) -> None:
    """A service's `--help`: `summary`, then every setting of `classes` (variable, default,
    meaning), read from the models without touching Kafka or ports."""
    sys.stdout.write(f"{summary} Configured by environment variables:\n")
    for cls in classes:
        for setting in describe(cls).settings:
            sys.stdout.write(f"  {setting.variable} (default {setting.default}): "
                             f"{setting.meaning}\n")


def models() -> list[SettingsModel]:
    return [describe(cls) for cls in settings_classes()]


def undocumented() -> list[str]:
    """Variables whose field has no description, `#:` comment or docstring."""
    return [s.variable for m in models() for s in m.settings if s.meaning == UNDOCUMENTED]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `mdmpush config reference` from the settings models; do not edit.",
        "     tests/ops/test_config_reference.py fails when this page is stale. -->",
        "",
        "Every service reads its configuration from environment variables only (pydantic-settings,",
        "prefix `MDMPUSH_`). Lists and objects are JSON (`MDMPUSH_SENDER_RETRY_DELAYS_MS="
        "'[1000,60000]'`);",
        "booleans accept `true`/`false`/`1`/`0`. Secrets are never shown, in this page or in logs.",
        "",
    ]
    for model in models():
        out += [f"## {model.name}", "", f"`{model.source}`", ""]
        if model.summary:
            out += [model.summary, ""]
        out += ["| variable | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{s.variable}` | {_cell(s.type)} | {_cell(s.default)} | {_cell(s.meaning)} |"
                for s in model.settings]
        out.append("")
    direct = direct_variables()
    if direct:
        out += ["## Read directly from the environment", "",
                "Not part of a settings model: the local stack's paths and ports, and the tests'",
                "broker. See the module that reads each.", "",
                "| variable | read by |", "|---|---|"]
        out += [f"| `{d.variable}` | {', '.join(f'`{s}`' for s in d.sources)} |" for d in direct]
        out.append("")
    return "\n".join(out)


def write(path: Path = DOC_PATH) -> bool:
    """Rewrite the page; True when it changed."""
    text = render()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
