"""The push-certificate alerts of deploy/prometheus/alerts.yaml in promtool's unit tests: each
expiry alert fires in its own band (30, 10, 1 days, Apple's reminders) and only there, and a
refused replacement pages with the number of enrollments it would have made unreachable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from services.monitoring.rules import ALERTS_FILE, load_groups

DAY = 86400
#: Topic -> days left at the evaluation time (promtool's clock starts at 0: time() = eval time).
DAYS_LEFT = {"a.healthy": 90, "b.30": 20, "c.10": 5, "d.1": 0.5, "e.expired": -3}
EVAL_MIN = 120


def _rule(name: str) -> dict[str, Any]:
    return next(r for g in load_groups() for r in g["rules"] if r.get("alert") == name)


def _expected(name: str, topic: str, summary: str) -> dict[str, Any]:
    rule = _rule(name)
    return {"exp_labels": {"severity": rule["labels"]["severity"], "topic": topic},
            "exp_annotations": {"summary": summary,
                                "description": rule["annotations"]["description"],
                                "runbook_url": rule["annotations"]["runbook_url"]}}


def test_certificate_alerts_fire_in_their_band_only(tmp_path: Path) -> None:
    at = EVAL_MIN * 60
    series = [{"series": f'mdmpush_push_certificate_expiry_timestamp_seconds{{topic="{t}"}}',
               "values": f"{at + days * DAY:.0f}x{EVAL_MIN + 5}"}
              for t, days in DAYS_LEFT.items()]
    series += [
        {"series": 'mdmpush_push_certificate_replacement_refused{topic="a.healthy"}',
         "values": f"0x60 1x{EVAL_MIN}"},
        {"series": 'mdmpush_push_certificate_unreachable_enrollments{topic="a.healthy"}',
         "values": f"0x60 1234x{EVAL_MIN}"},
        {"series": 'mdmpush_push_certificate_replacement_refused{topic="b.30"}',
         "values": f"0x{EVAL_MIN + 5}"},
        {"series": 'mdmpush_push_certificate_unreachable_enrollments{topic="b.30"}',
         "values": f"0x{EVAL_MIN + 5}"},
    ]
    expires = "Push certificate {} expires in {} days"
    soon = "Push certificate {} expires within a day or has expired"
    refused = ("A certificate of another topic was mounted as a.healthy: refused (1234 "
               "enrollments would have become unreachable)")
    checks = [
        ("MdmpushPushCertificateExpiresIn30Days", [("b.30", expires.format("b.30", 20))]),
        ("MdmpushPushCertificateExpiresIn10Days", [("c.10", expires.format("c.10", 5))]),
        ("MdmpushPushCertificateExpiresIn1Day",
         [("d.1", soon.format("d.1")), ("e.expired", soon.format("e.expired"))]),
        ("MdmpushPushCertificateReplacementRefused", [("a.healthy", refused)]),
    ]
    unit = {
        "rule_files": [str(ALERTS_FILE)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                *({"eval_time": f"{EVAL_MIN}m", "alertname": name,
                   "exp_alerts": [_expected(name, t, s) for t, s in alerts]}
                  for name, alerts in checks),
                # Before the refusal (minute 60) nothing is refused.
                {"eval_time": "30m", "alertname": "MdmpushPushCertificateReplacementRefused",
                 "exp_alerts": []},
            ],
        }],
    }
    path = tmp_path / "certificate_alerts_test.yaml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False), encoding="utf-8")
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: scripts/setup-debian.sh installs prometheus"
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
