"""Reading sysdiagnoses (folders and tarballs, binary and XML plists) and comparing them with a
registry record: the three verdicts of the Apple seed, and bad archives refused in one line."""

from __future__ import annotations

import plistlib
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from services.cli.main import main
from services.doctor.compare import Verdict, build_report, compare
from services.doctor.errors import SysdiagnoseError
from services.doctor.sysdiagnose import read_sysdiagnose
from tests.doctor.sysdiag import MAGIC, build_tree, make_tar, tar_with_member
from tests.support.samples import SAMPLES, TOPIC

OTHER_TOPIC = "com.apple.mgmt.External.99999999-0000-4000-8000-00000000beef"
OTHER_TOKEN = "b" * 64


def record(**changes: Any) -> dict[str, Any]:
    return {**SAMPLES["DeviceRecord"], "push_magic": MAGIC, **changes}


def verdicts(path: Path, rec: dict[str, Any]) -> dict[str, Verdict]:
    return {c.item: c.verdict for c in compare(read_sysdiagnose(path), rec)}


@pytest.mark.parametrize("fmt", [plistlib.FMT_BINARY, plistlib.FMT_XML], ids=["binary", "xml"])
@pytest.mark.parametrize("packing", ["folder", "w:gz", "w:"])
def test_reads_the_trifecta(tmp_path: Path, fmt: plistlib.PlistFormat, packing: str) -> None:
    tree = build_tree(tmp_path / "src", fmt=fmt)
    path = tree if packing == "folder" else make_tar(
        tree, tmp_path / ("sd.tar.gz" if packing == "w:gz" else "sd.tar"), packing)
    device = read_sysdiagnose(path)
    assert device.distinct_topics == [TOPIC]
    assert device.topics[0].stub.endswith("logs/MCState/Shared/profile-3f1e9a.stub")
    assert device.push_magic == MAGIC
    assert device.stubs == 2
    assert set(verdicts(path, record()).values()) == {Verdict.OK}


def test_tgz_and_hex_token_hash(tmp_path: Path) -> None:
    path = make_tar(build_tree(tmp_path / "src", hash_as_hex=True), tmp_path / "sd.tgz")
    assert set(verdicts(path, record()).values()) == {Verdict.OK}


def test_topic_mismatch_says_certificate_was_replaced(tmp_path: Path) -> None:
    path = make_tar(build_tree(tmp_path / "src", topic=OTHER_TOPIC), tmp_path / "sd.tar.gz")
    checks = {c.item: c for c in compare(read_sysdiagnose(path), record())}
    topic = checks["push topic"]
    assert topic.verdict is Verdict.MISMATCH
    assert f"the device listens on topic {OTHER_TOPIC}; your certificate's topic is {TOPIC}" \
        in topic.next_step
    assert "replaced instead of renewed" in topic.next_step
    assert checks["push token (SHA-256)"].verdict is Verdict.OK
    assert checks["push magic"].verdict is Verdict.OK


def test_token_hash_mismatch_says_token_changed(tmp_path: Path) -> None:
    tree = build_tree(tmp_path, token_hex=OTHER_TOKEN, fmt=plistlib.FMT_XML)
    checks = {c.item: c for c in compare(read_sysdiagnose(tree), record())}
    token = checks["push token (SHA-256)"]
    assert token.verdict is Verdict.MISMATCH
    assert "backup/restore" in token.next_step and "TokenUpdate" in token.next_step
    assert [c.verdict for c in checks.values()].count(Verdict.OK) == 2


def test_magic_mismatch_names_the_stale_duplicate_enrollment(tmp_path: Path) -> None:
    tree = build_tree(tmp_path, magic="NEW-MAGIC")
    stale = record(enrollment_id="E-old", udid="U1", push_magic="OLD-MAGIC", updated_at=1)
    live = record(enrollment_id="E-new", udid="U1", push_magic="NEW-MAGIC", updated_at=2)
    report = build_report(read_sysdiagnose(tree), {"E-old": stale, "E-new": live},
                          enrollment_id="E-old")
    magic = {c.item: c for c in report.checks}["push magic"]
    assert magic.verdict is Verdict.MISMATCH
    assert "enrollment E-new holds the device's PushMagic" in magic.next_step
    assert "delete the stale enrollment E-old" in magic.next_step
    assert "25 h" in magic.next_step
    assert report.other_enrollments == ("E-new",)


def test_record_found_by_udid_or_by_the_devices_own_values(tmp_path: Path) -> None:
    device = read_sysdiagnose(build_tree(tmp_path))
    gone = record(enrollment_id="E-gone", udid="U1", state="CHECKED_OUT", updated_at=9,
                  push_magic="X", token_hex=OTHER_TOKEN)
    live = record(enrollment_id="E-live", udid="U1", updated_at=5)
    registry = {"E-gone": gone, "E-live": live}
    by_udid = build_report(device, registry, udid="U1")
    assert by_udid.record is live and by_udid.healthy
    by_values = build_report(device, registry)
    assert by_values.record is live and by_values.other_enrollments == ("E-gone",)


def test_missing_values_and_unknown_enrollment(tmp_path: Path) -> None:
    device = read_sysdiagnose(build_tree(tmp_path, magic=None))
    checks = {c.item: c.verdict for c in compare(device, record(token_hex=None))}
    assert checks == {"push topic": Verdict.OK, "push token (SHA-256)": Verdict.MISSING,
                      "push magic": Verdict.MISSING}
    report = build_report(device, {}, enrollment_id="nope")
    assert report.record is None and not report.healthy
    assert "no registry record for enrollment nope" in report.notes[0]


def test_cli_offline_prints_what_the_device_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_tar(build_tree(tmp_path / "src"), tmp_path / "sd.tar.gz")
    assert main(["doctor", "sysdiagnose", str(path), "--offline"]) == 0
    out = capsys.readouterr().out
    assert TOPIC in out and MAGIC in out
    assert "offline" in out


def _bad(tmp_path: Path, kind: str) -> Path:
    if kind == "random bytes":
        path = tmp_path / "sd.tar.gz"
        path.write_bytes(bytes(range(256)) * 40)
        return path
    if kind == "truncated gzip":
        good = make_tar(build_tree(tmp_path / "src"), tmp_path / "good.tar.gz")
        path = tmp_path / "sd.tar.gz"
        path.write_bytes(good.read_bytes()[:300])
        return path
    if kind == "no MDM.plist":
        return make_tar(build_tree(tmp_path / "src", with_mdm_plist=False), tmp_path / "a.tgz")
    if kind == "no stub":
        return build_tree(tmp_path, with_stubs=False)
    if kind == "corrupt MDM.plist":
        return make_tar(build_tree(tmp_path / "src", mdm_plist=b"bplist00\xff\x00garbage"),
                        tmp_path / "a.tar.gz")
    if kind == "corrupt stub":
        tree = build_tree(tmp_path)
        (tree / "logs/MCState/Shared/profile-77b0c4.stub").write_bytes(b"<?xml <plist><dict>")
        return tree
    if kind == "bad token hash":
        return build_tree(tmp_path, mdm_plist=plistlib.dumps({"LastPushTokenHash": b"short"}))
    if kind == "path traversal":
        return tar_with_member(tmp_path / "evil.tar.gz", "../../escape.stub")
    if kind == "hard link out":
        return tar_with_member(tmp_path / "evil.tar.gz", "x/MDM.plist", kind=tarfile.LNKTYPE,
                               link="../../../etc/passwd")
    if kind == "symlink out":
        return tar_with_member(tmp_path / "evil.tar.gz", "x/link.stub", kind=tarfile.SYMTYPE,
                               link="/etc/passwd")
    assert kind == "missing path"
    return tmp_path / "nothing-here.tar.gz"


BAD = {
    "random bytes": "not a readable tar archive",
    "truncated gzip": "damaged archive (Compressed file ended",
    "no MDM.plist": "no logs/MCState/Shared/MDM.plist",
    "no stub": "no *.stub profile",
    "corrupt MDM.plist": "MDM.plist: corrupt plist",
    "corrupt stub": "profile-77b0c4.stub: corrupt plist",
    "bad token hash": "LastPushTokenHash is not a 32-byte SHA-256",
    "path traversal": "unsafe archive member '../../escape.stub'",
    "hard link out": "unsafe archive member 'x/MDM.plist'",
    "symlink out": "unsafe archive member 'x/link.stub'",
    "missing path": "no such file or folder",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_archives_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = _bad(tmp_path, kind)
    with pytest.raises(SysdiagnoseError, match=re.escape(BAD[kind])):
        read_sysdiagnose(path)
    assert main(["doctor", "sysdiagnose", str(path), "--offline"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mdmpush: error: ")
    assert BAD[kind] in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path.parent / "escape.stub").exists()
