"""The alert rules: promtool accepts them, promtool's unit tests make the alerts the pipeline
test cannot trigger fire (and stay quiet when healthy), and every alert tells the operator what
it means and where its runbook section is."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from services.monitoring.rules import ALERTS_FILE, load_groups
from tests.deploy.rendering import ROOT

RUNBOOKS = ROOT / "docs" / "runbooks.md"
UNIT_TESTS = Path(__file__).resolve().parent / "alert_rule_tests.yaml"
NEW_ALERTS = {"MdmpushServiceDown", "MdmpushServiceAbsent", "MdmpushConsumerLagGrowing",
              "MdmpushGatewayErrors", "MdmpushDeadLetters",
              # The trusted edge: another tenant's check-ins refused, the correlator's cap reached.
              "MdmpushForeignCheckins", "MdmpushCorrelatorEnrollmentsRefused"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: scripts/setup-debian.sh installs prometheus"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def _alerts() -> list[dict[str, object]]:
    return [rule for group in load_groups() for rule in group["rules"]]


def test_rule_file_passes_promtool() -> None:
    result = _promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_alerts_fire_in_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_s_alerts_exist() -> None:
    assert {str(rule["alert"]) for rule in _alerts()} >= NEW_ALERTS


def _anchors() -> set[str]:
    """GitHub's anchors of the runbook's section headings."""
    headings = re.findall(r"^## (.+)$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: str(r["alert"]))
def test_alert_is_documented_with_a_runbook_section(rule: dict[str, object]) -> None:
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    assert annotations["summary"] and annotations["description"]
    url = urlparse(annotations["runbook_url"])
    assert url.scheme == "https" and url.path.endswith("/docs/runbooks.md")
    assert url.fragment == str(rule["alert"]).lower()
    assert url.fragment in _anchors(), f"docs/runbooks.md has no section {rule['alert']}"
    assert rule["labels"]["severity"] in ("critical", "warning")  # type: ignore[index]
