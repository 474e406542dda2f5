"""What a device says about its own push trifecta, read from a sysdiagnose (Apple seed,
"Determining correct values"): the push topic from the `*.stub` profile plists, and PushMagic and
`LastPushTokenHash` (SHA-256 of the raw token; iOS never records the token itself) from
`logs/MCState/Shared/MDM.plist`.

A sysdiagnose comes from a customer's device and may be anything, so every failure becomes a
`SysdiagnoseError` with one sentence. A tarball is checked member by member with tarfile's
`data` filter before anything is written (one unsafe member rejects the archive), and then only
the files read here are extracted into a temporary directory: a sysdiagnose is hundreds of
megabytes of which the doctor needs a few kilobytes.
"""

from __future__ import annotations

import plistlib
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.doctor.errors import SysdiagnoseError

MDM_PLIST = ("logs", "MCState", "Shared", "MDM.plist")
TOKEN_HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class StubTopic:
    """A push topic and the profile stub it was found in (relative to the archive root)."""

    stub: str
    topic: str


@dataclass(frozen=True, slots=True)
class DeviceSide:
    """The device's view of its MDM enrollment."""

    source: str
    stubs: int
    topics: tuple[StubTopic, ...]
    push_magic: str | None
    token_hash: bytes | None

    @property
    def distinct_topics(self) -> list[str]:
        return sorted({t.topic for t in self.topics})


def read_sysdiagnose(path: Path) -> DeviceSide:
    """Read a sysdiagnose `.tar.gz` / `.tgz` / `.tar`, or an extracted folder."""
    if not path.exists():
        raise SysdiagnoseError(f"{path}: no such file or folder")
    with _root(path) as root:
        stubs = sorted(p for p in root.rglob("*.stub") if p.is_file())
        if not stubs:
            raise SysdiagnoseError(f"{path}: no *.stub profile in it: not a complete sysdiagnose")
        mdm_plist = _find_mdm_plist(root, path)
        topics = tuple(
            StubTopic(str(stub.relative_to(root)), topic)
            for stub in stubs
            for topic in _find_topics(_load_plist(stub, root))
        )
        mdm = _load_plist(mdm_plist, root)
        if not isinstance(mdm, dict):
            raise SysdiagnoseError(f"{mdm_plist.relative_to(root)}: not a dictionary plist")
        magic = mdm.get("PushMagic")
        return DeviceSide(
            source=str(path),
            stubs=len(stubs),
            topics=topics,
            push_magic=magic if isinstance(magic, str) else None,
            token_hash=_token_hash(mdm.get("LastPushTokenHash")),
        )


@contextmanager
def _root(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mdmpush-sysdiagnose-") as tmp:
        _extract_needed(path, Path(tmp))
        yield Path(tmp)


def _extract_needed(path: Path, dest: Path) -> None:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                try:
                    tarfile.data_filter(member, str(dest))
                except tarfile.FilterError as exc:
                    raise SysdiagnoseError(
                        f"{path}: unsafe archive member {member.name!r} ({exc}): refusing it"
                    ) from exc
            needed = [m for m in members if m.isfile() and _is_needed(m.name)]
            tar.extractall(dest, members=needed, filter="data")
    except tarfile.ReadError as exc:
        raise SysdiagnoseError(
            f"{path}: not a readable tar archive (.tar, .tar.gz or .tgz), nor a folder") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SysdiagnoseError(f"{path}: damaged archive ({first_line})") from exc


def _is_needed(name: str) -> bool:
    return name.endswith(".stub") or tuple(name.split("/")[-4:]) == MDM_PLIST


def _find_mdm_plist(root: Path, path: Path) -> Path:
    found = sorted((p for p in root.rglob("MDM.plist") if p.parts[-4:] == MDM_PLIST),
                   key=lambda p: len(p.parts))
    if not found:
        raise SysdiagnoseError(f"{path}: no {'/'.join(MDM_PLIST)} in it: the device has no MDM "
                               "enrollment state, or this is not a complete sysdiagnose")
    return found[0]


def _load_plist(file: Path, root: Path) -> Any:
    try:
        with file.open("rb") as fh:
            return plistlib.load(fh)
    # plistlib's binary and XML parsers raise many unrelated types on corrupt input.
    except Exception as exc:
        raise SysdiagnoseError(
            f"{file.relative_to(root)}: corrupt plist ({type(exc).__name__}: {exc})") from exc


def _find_topics(node: Any) -> Iterator[str]:
    """Every string value of a `Topic` key, at any depth (the MDM payload is in PayloadContent)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Topic" and isinstance(value, str):
                yield value
            else:
                yield from _find_topics(value)
    elif isinstance(node, list):
        for item in node:
            yield from _find_topics(item)


def _token_hash(value: Any) -> bytes | None:
    """LastPushTokenHash as 32 bytes: plist data, or a hex string (with or without <...>/spaces)."""
    if value is None:
        return None
    if isinstance(value, str):
        cleaned = value.strip().strip("<>").replace(" ", "")
        try:
            value = bytes.fromhex(cleaned)
        except ValueError as exc:
            raise SysdiagnoseError(f"LastPushTokenHash {value!r} is not hex") from exc
    if not isinstance(value, bytes) or len(value) != TOKEN_HASH_BYTES:
        raise SysdiagnoseError(f"LastPushTokenHash is not a {TOKEN_HASH_BYTES}-byte SHA-256")
    return value
