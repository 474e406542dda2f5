"""What a device says about its own push trifecta, read from a sysdiagnose (Apple seed,
"Determining correct values"): the push topic from the `*.stub` profile plists, and PushMagic and
`LastPushTokenHash` (SHA-256 of the raw token; iOS never records the token itself) from
`logs/MCState/Shared/MDM.plist`.

A sysdiagnose comes from a customer's device and may be anything, so every failure becomes a
`SysdiagnoseError` with one sentence. A tarball is read member by member, keeping no index: each is
checked with tarfile's `data` filter (one unsafe member rejects the archive), and only the files
read here are extracted into a temporary directory: a sysdiagnose is hundreds of megabytes of
which the doctor needs a few kilobytes.

Bounded whatever the archive claims (`ArchiveLimits`): members, uncompressed bytes (a gzip bomb
stops at the limit instead of filling the disk or taking minutes), the size of each file read
(a 10 GB `.stub` is refused before it is written), tar's extended headers (tarfile reads a pax
or GNU long-name header into memory whole, whatever size it claims), and plist walking
(shared or cyclic sub-objects, or nesting deeper than Python's stack, in a profile stub).
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
class ArchiveLimits:
    """What a sysdiagnose may hold before it is refused. A real one has a few thousand members
    and up to ~2 GB uncompressed; its profile stubs and MDM.plist are kilobytes."""

    max_members: int = 100_000
    max_total_bytes: int = 8 * 1024**3
    max_file_bytes: int = 8 * 1024**2
    max_header_bytes: int = 1024**2
    max_plist_nodes: int = 1_000_000
    #: Folders in a member's path: sysdiagnoses nest ~10 deep; thousands exhaust os.makedirs.
    max_path_depth: int = 64


DEFAULT_LIMITS = ArchiveLimits()
#: Member types whose data tarfile reads into memory as header text (pax, GNU long names).
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                     tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


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


def read_sysdiagnose(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> DeviceSide:
    """Read a sysdiagnose `.tar.gz` / `.tgz` / `.tar`, or an extracted folder."""
    if not path.exists():
        raise SysdiagnoseError(f"{path}: no such file or folder")
    with _root(path, limits) as root:
        stubs = sorted(p for p in root.rglob("*.stub") if p.is_file())
        if not stubs:
            raise SysdiagnoseError(f"{path}: no *.stub profile in it: not a complete sysdiagnose")
        mdm_plist = _find_mdm_plist(root, path)
        topics = tuple(
            StubTopic(str(stub.relative_to(root)), topic)
            for stub in stubs
            for topic in _find_topics(_load_plist(stub, root, limits), stub, root, limits)
        )
        mdm = _load_plist(mdm_plist, root, limits)
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
def _root(path: Path, limits: ArchiveLimits) -> Iterator[Path]:
    if path.is_dir():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mdmpush-sysdiagnose-") as tmp:
        _extract_needed(path, Path(tmp), limits)
        yield Path(tmp)


def _extract_needed(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    tarinfo = _bounded_tarinfo(path, limits)
    try:
        with tarfile.open(path, "r:*", tarinfo=tarinfo) as tar:
            total = 0
            for members, member in enumerate(tar, start=1):
                total += member.size
                _check_member(path, member, dest, limits)
                if members > limits.max_members:
                    raise SysdiagnoseError(f"{path}: more than {limits.max_members} members: "
                                           "not a sysdiagnose (or an archive bomb): refusing it")
                if total > limits.max_total_bytes:
                    raise SysdiagnoseError(
                        f"{path}: more than {limits.max_total_bytes} bytes uncompressed: "
                        "not a sysdiagnose (or an archive bomb): refusing it")
                if member.isfile() and _is_needed(member.name):
                    tar.extract(member, dest, filter="data")
                # Past members are not needed again: keep no index, memory stays flat.
                tar.members.clear()  # type: ignore[attr-defined]
    except tarfile.ReadError as exc:
        raise SysdiagnoseError(
            f"{path}: not a readable tar archive (.tar, .tar.gz or .tgz), nor a folder") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SysdiagnoseError(f"{path}: damaged archive ({first_line})") from exc


def _check_member(path: Path, member: tarfile.TarInfo, dest: Path, limits: ArchiveLimits) -> None:
    """Refuse the archive for one unsafe or oversized member, before anything of it is read."""
    try:
        tarfile.data_filter(member, str(dest))
    except tarfile.FilterError as exc:
        raise SysdiagnoseError(
            f"{path}: unsafe archive member {member.name!r} ({exc}): refusing it") from exc
    if member.name.count("/") > limits.max_path_depth:
        raise SysdiagnoseError(f"{path}: a member {member.name.count('/')} folders deep (at most "
                               f"{limits.max_path_depth}): not a sysdiagnose: refusing it")
    if member.isfile() and _is_needed(member.name) and member.size > limits.max_file_bytes:
        raise SysdiagnoseError(
            f"{path}: {member.name} is {member.size} bytes, a profile or MDM state plist has at "
            f"most {limits.max_file_bytes}: refusing it")


def _bounded_tarinfo(path: Path, limits: ArchiveLimits) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses extended headers over the limit before tarfile reads them."""

    class BoundedTarInfo(tarfile.TarInfo):
        def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
            if self.type in _EXTENDED_HEADERS and self.size > limits.max_header_bytes:
                raise SysdiagnoseError(
                    f"{path}: a tar extended header of {self.size} bytes (at most "
                    f"{limits.max_header_bytes}): not a sysdiagnose: refusing it")
            return super()._proc_member(tarfile_)  # type: ignore[misc]

    return BoundedTarInfo


def _is_needed(name: str) -> bool:
    return name.endswith(".stub") or tuple(name.split("/")[-4:]) == MDM_PLIST


def _find_mdm_plist(root: Path, path: Path) -> Path:
    found = sorted((p for p in root.rglob("MDM.plist") if p.parts[-4:] == MDM_PLIST),
                   key=lambda p: len(p.parts))
    if not found:
        raise SysdiagnoseError(f"{path}: no {'/'.join(MDM_PLIST)} in it: the device has no MDM "
                               "enrollment state, or this is not a complete sysdiagnose")
    return found[0]


def _load_plist(file: Path, root: Path, limits: ArchiveLimits) -> Any:
    with file.open("rb") as fh:
        data = fh.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise SysdiagnoseError(f"{file.relative_to(root)}: over {limits.max_file_bytes} bytes: "
                               "not a profile or MDM state plist")
    try:
        return plistlib.loads(data)
    # plistlib's binary and XML parsers raise many unrelated types on corrupt input (and
    # RecursionError on deeply nested binary plists).
    except Exception as exc:
        raise SysdiagnoseError(
            f"{file.relative_to(root)}: corrupt plist ({type(exc).__name__}: {exc})") from exc


def _find_topics(node: Any, file: Path, root: Path, limits: ArchiveLimits) -> Iterator[str]:
    """Every string value of a `Topic` key, at any depth (the MDM payload is in PayloadContent).

    Iterative, and each container is visited once: a binary plist can share one sub-object from
    many places (2**64 paths in a few hundred bytes) or contain itself, and nest deeper than
    Python's stack.
    """
    stack, seen, visited = [node], set(), 0
    while stack:
        current = stack.pop()
        if not isinstance(current, (dict, list)) or id(current) in seen:
            continue
        seen.add(id(current))
        visited += 1
        if visited > limits.max_plist_nodes:
            raise SysdiagnoseError(f"{file.relative_to(root)}: more than "
                                   f"{limits.max_plist_nodes} nested values: not a profile")
        if isinstance(current, dict):
            for key, value in current.items():
                if key == "Topic" and isinstance(value, str):
                    yield value
                else:
                    stack.append(value)
        else:
            stack.extend(reversed(current))


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
