"""The Apple feedback bundle: values used, APNs answers of the failed pushes, and when the
failures began (after the last answered push), as JSON and as text through the CLI."""

from __future__ import annotations

import json

import pytest

from services.cli.main import main
from services.doctor.feedback import build_feedback
from services.doctor.history import DeviceHistory
from services.doctor.times import iso
from tests.doctor.history_samples import ENROLLMENT, MIN, alert, failing_history, outcome
from tests.support.samples import NOW, SAMPLES, TOKEN, TOPIC


def history(outcomes: list, alerts: list, record: dict | None = None) -> DeviceHistory:
    return DeviceHistory(ENROLLMENT, record, outcomes, alerts, 0)


def test_failures_begin_after_the_last_answered_push() -> None:
    outcomes, alerts = failing_history()
    bundle = build_feedback(history(outcomes, alerts, SAMPLES["DeviceRecord"]))
    assert bundle.last_answered_at == NOW + 2000
    assert bundle.failures_began_at == NOW + 10 * MIN  # the unanswered push's send time
    assert [(p.job_id, p.state, p.status, p.reason, p.apns_id) for p in bundle.failed_pushes] == [
        ("r2/UDID-1", "UNANSWERED", 200, "unanswered: stale_push_magic", "id-2"),
        ("r3/UDID-1", "FAILED", 410, "Unregistered", "id-3b"),
    ]
    assert bundle.earlier_failures == 1  # the BadDeviceToken before the answered push
    # The values of the latest failed push, not only the registry's.
    assert (bundle.push_topic, bundle.push_token, bundle.push_magic) == (TOPIC, TOKEN, "magic-2")
    assert bundle.udid == "UDID-1"


def test_alert_without_outcome_and_no_answer_ever() -> None:
    sent = outcome("r5/UDID-1", "SENT", NOW, status=200, apns_id="id-5")
    only_alert = alert("r6/UDID-1", "DEVICE_UNREACHABLE", NOW + MIN, apns_id="id-6")
    bundle = build_feedback(history([sent], [only_alert]))
    assert bundle.last_answered_at is None
    assert bundle.failures_began_at == NOW + MIN
    [push] = bundle.failed_pushes
    assert (push.status, push.apns_id, push.reason) == (200, "id-6",
                                                       "unanswered: device_unreachable")
    healthy = build_feedback(history([sent, outcome("r5/UDID-1", "ANSWERED", NOW + 1)], []))
    assert healthy.failed_pushes == () and healthy.failures_began_at is None


@pytest.mark.kafka
@pytest.mark.usefixtures("failing_device")
def test_cli_feedback_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "feedback", ENROLLMENT, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["push_topic"] == TOPIC and data["push_token"] == TOKEN
    assert data["push_magic"] == "magic-2"
    assert data["failures_began_at"] == iso(NOW + 10 * MIN)
    assert data["last_answered_at"] == iso(NOW + 2000)
    assert [(p["at"], p["status"], p["reason"], p["apns_id"]) for p in data["failed_pushes"]] == [
        (iso(NOW + 10 * MIN), 200, "unanswered: stale_push_magic", "id-2"),
        (iso(NOW + 21 * MIN), 410, "Unregistered", "id-3b"),
    ]
    assert "sysdiagnose" in data["apple_checklist"]

    assert main(["doctor", "feedback", ENROLLMENT]) == 0
    text = capsys.readouterr().out
    assert f"push topic:         {TOPIC}" in text
    assert f"failures began:     {iso(NOW + 10 * MIN)}" in text
    assert "APNs 410" in text and "apns-id id-3b" in text
    assert "1 earlier failure(s)" in text
