"""A static security scan of each rendered overlay with checkov: no failed check, and every
skipped check skipped by an annotation on the object that gives the reason.

checkov pins dependencies that conflict with the project's (packaging<24 against pytest's
>=24), so it lives in its own virtualenv, .venv/tools/checkov, made on first use from the
configured package index (about a minute, once).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.rendering import OVERLAYS, ROOT, rendered_text

CHECKOV_VERSION = "3.3.30"
TOOL_VENV = ROOT / ".venv" / "tools" / "checkov"
CHECKOV = TOOL_VENV / "bin" / "checkov"


@pytest.fixture(scope="session")
def checkov() -> Path:
    if not CHECKOV.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOL_VENV)], check=True, timeout=120)
        subprocess.run([str(TOOL_VENV / "bin" / "pip"), "install", "-q",
                        f"checkov=={CHECKOV_VERSION}"], check=True, timeout=600)
    return CHECKOV


def scan(checkov: Path, manifest: Path) -> dict[str, Any]:
    """checkov's JSON report; --skip-download: offline, no Prisma Cloud guidelines."""
    result = subprocess.run(
        [str(checkov), "--file", str(manifest), "--framework", "kubernetes", "--output", "json",
         "--skip-download"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_passes_checkov(overlay: str, checkov: Path, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    report = scan(checkov, manifest)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["check_name"])
              for c in report["results"].get("failed_checks", [])]
    assert failed == [], failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100, summary  # it did scan the objects
    skipped = report["results"]["skipped_checks"]
    assert len(skipped) == summary["skipped"]
    reasons = {(c["check_id"], c["check_result"]["suppress_comment"]) for c in skipped}
    # One reason per skipped check, the same on every Deployment (checkov.io/skipN annotations).
    assert {check for check, _ in reasons} == {"CKV_K8S_43", "CKV_K8S_11", "CKV_K8S_35"}, reasons
    assert len(reasons) == 3 and all(len(reason) > 40 for _, reason in reasons), reasons
    assert {c["resource"].split(".")[0] for c in skipped} == {"Deployment"}
