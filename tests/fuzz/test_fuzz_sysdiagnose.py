"""Fuzzing the sysdiagnose reader: any archive ends in a DeviceSide or SysdiagnoseError.

Drawn archives (tar, tar.gz; drawn stubs and MDM.plist, damaged or not), arbitrary bytes, and
mutated real-shaped archives run through `read_sysdiagnose`. Bombs are built by hand: members
claiming 10 GiB, a gzip bomb, a flood of members, pax and GNU long-name headers claiming
gigabytes, 20,000-deep, shared and cyclic plists in a profile stub, a path 2,000 folders deep,
and a zip bomb. Each is refused (or read) in bounded memory, without writing what it claims.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.doctor.errors import SysdiagnoseError
from services.doctor.sysdiagnose import ArchiveLimits, DeviceSide, read_sysdiagnose
from tests.doctor.sysdiag import ROOT, build_tree, make_tar
from tests.fuzz import plists
from tests.fuzz.fuzzing import FUZZ, peak_allocated, ran

SHARED = f"{ROOT}/logs/MCState/Shared"
MEMORY_BOUND = 32 * 1024 * 1024
GiB = 1024**3


def reads_or_refuses(path: Path, limits: ArchiveLimits | None = None) -> DeviceSide | None:
    """The property: the device's side, or SysdiagnoseError with one line."""
    try:
        return read_sysdiagnose(path, limits) if limits else read_sysdiagnose(path)
    except SysdiagnoseError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@st.composite
def archives(draw: st.DrawFn) -> tuple[str, dict[str, bytes]]:
    """A sysdiagnose-shaped member set: drawn (maybe damaged) stubs and MDM.plist."""
    members: dict[str, bytes] = {}
    for i in range(draw(st.integers(0, 3))):
        members[f"{SHARED}/profile-{i}.stub"] = draw(plists.plist_bytes(plists.PLIST_VALUES))
    if draw(st.booleans()):
        state = draw(st.fixed_dictionaries({}, optional={
            "PushMagic": plists.PLIST_VALUES,
            "LastPushTokenHash": st.binary(min_size=30, max_size=34) | plists.TEXT
                                 | plists.PLIST_VALUES,
        }))
        members[f"{SHARED}/MDM.plist"] = draw(plists.plist_bytes(st.just(state)))
    if draw(st.booleans()):
        members[f"{ROOT}/logs/other.log"] = draw(st.binary(max_size=100))
    return draw(st.sampled_from(["w", "w:gz"])), members


@FUZZ
@given(archive=archives(), damage=st.none() | st.tuples(st.floats(0, 1), st.binary(max_size=4)))
def test_drawn_archives(archive: tuple[str, dict[str, bytes]],
                        damage: tuple[float, bytes] | None) -> None:
    ran("sysdiagnose: drawn archives")
    mode, members = archive
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tar(Path(tmp) / "sd.tar.gz", members, mode)
        if damage is not None:
            data = bytearray(path.read_bytes())
            at = int(damage[0] * (len(data) - 1))
            data[at:at + len(damage[1])] = damage[1]
            path.write_bytes(bytes(data))
        reads_or_refuses(path)


@FUZZ
@given(data=st.binary(max_size=2000), gz=st.booleans())
def test_arbitrary_bytes(data: bytes, gz: bool) -> None:
    ran("sysdiagnose: arbitrary bytes")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sd.tar"
        path.write_bytes(b"\x1f\x8b\x08\x00" + data if gz else data)
        reads_or_refuses(path)


_GOOD: dict[str, bytes] = {}


def _good_archive() -> bytes:
    if not _GOOD:
        with tempfile.TemporaryDirectory() as tmp:
            _GOOD["tar"] = make_tar(build_tree(Path(tmp)), Path(tmp) / "sd.tar", "w").read_bytes()
    return _GOOD["tar"]


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 20_000), st.binary(min_size=1, max_size=12)),
                      min_size=1, max_size=6))
def test_mutated_real_archive(edits: list[tuple[int, bytes]]) -> None:
    """Byte edits of a real-shaped uncompressed tar: headers, sizes, names, plist bodies."""
    ran("sysdiagnose: mutated real archive")
    data = bytearray(_good_archive())
    for at, patch in edits:
        at %= len(data)
        data[at:at + len(patch)] = patch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sd.tar"
        path.write_bytes(bytes(data))
        reads_or_refuses(path)


# -- bombs, by hand ----------------------------------------------------------------------------

def _claims(path: Path, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> Path:
    """A tar whose one member's header claims `size` bytes, with (almost) nothing behind it."""
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    path.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096)
    return path


def _gzip_bomb(path: Path) -> Path:
    """A log member of 256 MiB of zeros: ~250 KB compressed."""
    zeros = b"\0" * (1024 * 1024)

    class Zeros(io.RawIOBase):
        left = 256

        def readable(self) -> bool:
            return True

        def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
            if not self.left:
                return 0
            self.left -= 1
            buf[:len(zeros)] = zeros
            return len(zeros)

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{ROOT}/logs/huge.log")
        info.size = 256 * len(zeros)
        tar.addfile(info, io.BufferedReader(Zeros(), buffer_size=len(zeros)))
    return path


def _many_members(path: Path) -> Path:
    return write_tar(path, {f"{ROOT}/logs/{i}.log": b"" for i in range(3_000)})


def _deep_path(path: Path) -> Path:
    return write_tar(path, {"/".join(["d"] * 2_000) + "/x.stub": b"x"})


def _stub(path: Path, body: bytes) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        tree = build_tree(Path(tmp))
        (tree / "logs/MCState/Shared/profile-3f1e9a.stub").write_bytes(body)
        return make_tar(tree, path)


def _zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{SHARED}/MDM.plist", b"\0" * (64 * 1024 * 1024))
    return path


#: name -> (builder, limits or None for the defaults, expected: error text or "reads")
BOMBS: dict[str, tuple[Callable[[Path], Path], ArchiveLimits | None, str]] = {
    "a 10 GiB .stub member": (lambda p: _claims(p, f"{SHARED}/a.stub", 10 * GiB), None,
                              "bytes, a profile or MDM state plist has at most"),
    "a 10 GiB log member": (lambda p: _claims(p, f"{ROOT}/logs/a.log", 10 * GiB), None,
                            "bytes uncompressed"),
    "a 2 GiB pax header": (lambda p: _claims(p, "x", 2 * GiB, tarfile.XHDTYPE), None,
                           "a tar extended header of"),
    "a 2 GiB GNU long name": (lambda p: _claims(p, "x", 2 * GiB, tarfile.GNUTYPE_LONGNAME), None,
                              "a tar extended header of"),
    "gzip bomb (256 MiB of zeros)": (_gzip_bomb, ArchiveLimits(max_total_bytes=64 * 1024**2),
                                     "bytes uncompressed"),
    "3,000 members": (_many_members, ArchiveLimits(max_members=1_000), "more than 1000 members"),
    "a path 2,000 folders deep": (_deep_path, None, "2000 folders deep"),
    "20,000-deep XML stub": (lambda p: _stub(p, plists.deep_xml_plist(20_000)), None, "reads"),
    "5,000-deep binary stub": (lambda p: _stub(p, plists.deep_binary_plist()), None,
                               "corrupt plist (RecursionError"),
    "shared sub-objects in a stub": (lambda p: _stub(p, plists.dag_plist()), None, "reads"),
    "cyclic stub": (lambda p: _stub(p, plists.cyclic_plist()), None, "reads"),
    "zip bomb": (_zip_bomb, None, "not a readable tar archive"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_refused_in_bounded_memory(tmp_path: Path, name: str) -> None:
    ran("sysdiagnose: bombs and hostile shapes")
    build, limits, expected = BOMBS[name]
    path = build(tmp_path / "sd.tar.gz")
    if expected == "reads":
        assert isinstance(reads_or_refuses(path, limits), DeviceSide)
    else:
        with pytest.raises(SysdiagnoseError, match=re.escape(expected)):
            read_sysdiagnose(path, limits or ArchiveLimits())
    assert peak_allocated(lambda: reads_or_refuses(path, limits)) < MEMORY_BOUND
    assert not list(Path(tempfile.gettempdir()).glob("mdmpush-sysdiagnose-*/**/*.stub"))


def test_a_folder_with_a_huge_plist_is_refused_unread(tmp_path: Path) -> None:
    ran("sysdiagnose: bombs and hostile shapes")
    tree = build_tree(tmp_path)
    with (tree / "logs/MCState/Shared/MDM.plist").open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: 64 MiB without writing them
    limits = ArchiveLimits(max_file_bytes=1024 * 1024)
    with pytest.raises(SysdiagnoseError, match="over 1048576 bytes"):
        read_sysdiagnose(tree, limits)
    assert peak_allocated(lambda: reads_or_refuses(tree, limits)) < MEMORY_BOUND
