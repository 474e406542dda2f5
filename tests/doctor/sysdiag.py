"""Sysdiagnose-shaped trees and archives for the doctor's tests.

The layout follows a real iOS sysdiagnose: one top-level `sysdiagnose_<date>_<model>` folder,
the enrollment state in `logs/MCState/Shared/MDM.plist`, installed profiles as
`logs/MCState/Shared/profile-<hash>.stub` (the MDM payload nested in `PayloadContent`), plus
unrelated logs and profiles without a Topic.
"""

from __future__ import annotations

import hashlib
import io
import plistlib
import tarfile
from pathlib import Path
from typing import Any

from tests.support.samples import TOKEN, TOPIC

MAGIC = "6F2C9B1A-5E3D-4B8A-9C71-2D4E6F8A0B1C"
ROOT = "sysdiagnose_2026.11.18_10-13-20+0100_iPhone-OS_iPhone_22B83"


def mdm_profile(topic: str) -> dict[str, Any]:
    return {
        "PayloadIdentifier": "com.example.mdm.enrollment",
        "PayloadType": "Configuration",
        "PayloadUUID": "0D1E2F30-4152-6374-8596-A7B8C9DAEBFC",
        "PayloadVersion": 1,
        "PayloadContent": [
            {"PayloadType": "com.apple.security.scep", "PayloadIdentifier": "scep"},
            {
                "PayloadType": "com.apple.mdm",
                "PayloadIdentifier": "com.example.mdm",
                "ServerURL": "https://mdm.example.com/mdm",
                "CheckInURL": "https://mdm.example.com/checkin",
                "Topic": topic,
                "AccessRights": 8191,
                "IdentityCertificateUUID": "0A1B2C3D-0000-4000-8000-000000000001",
            },
        ],
    }


def build_tree(
    parent: Path,
    topic: str = TOPIC,
    magic: str | None = MAGIC,
    token_hex: str = TOKEN,
    fmt: plistlib.PlistFormat = plistlib.FMT_BINARY,
    hash_as_hex: bool = False,
    mdm_plist: bytes | None = None,
    with_mdm_plist: bool = True,
    with_stubs: bool = True,
) -> Path:
    """Write an extracted sysdiagnose under `parent`; returns its top-level folder."""
    root = parent / ROOT
    shared = root / "logs" / "MCState" / "Shared"
    shared.mkdir(parents=True)
    (root / "logs" / "MobileInstallation").mkdir(parents=True)
    (root / "logs" / "MobileInstallation" / "mobile_installation.log.0").write_text("noise\n")
    (root / "sysdiagnose.log").write_text("sysdiagnose started\n")
    if with_stubs:
        (shared / "profile-3f1e9a.stub").write_bytes(plistlib.dumps(mdm_profile(topic), fmt=fmt))
        wifi = {"PayloadType": "Configuration", "PayloadContent": [
            {"PayloadType": "com.apple.wifi.managed", "SSID_STR": "corp"}]}
        (shared / "profile-77b0c4.stub").write_bytes(plistlib.dumps(wifi, fmt=fmt))
    if with_mdm_plist:
        digest = hashlib.sha256(bytes.fromhex(token_hex)).digest()
        state: dict[str, Any] = {
            "LastPushTokenHash": digest.hex() if hash_as_hex else digest,
            "ManagingProfileIdentifier": "com.example.mdm.enrollment",
            "ServerURL": "https://mdm.example.com/mdm",
        }
        if magic is not None:
            state["PushMagic"] = magic
        (shared / "MDM.plist").write_bytes(
            mdm_plist if mdm_plist is not None else plistlib.dumps(state, fmt=fmt))
    return root


def make_tar(tree: Path, out: Path, mode: str = "w:gz") -> Path:
    """Archive `tree` as a sysdiagnose tarball (members under the top-level folder)."""
    with tarfile.open(out, mode) as tar:  # type: ignore[call-overload]
        tar.add(tree, arcname=tree.name)
    return out


def tar_with_member(out: Path, name: str, data: bytes = b"x",
                    kind: bytes = tarfile.REGTYPE, link: str = "") -> Path:
    """A gzip tarball holding one crafted member (path traversal, absolute path, symlink...)."""
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.size = 0 if kind != tarfile.REGTYPE else len(data)
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out
