"""The current diagnosis of an enrollment, and `mdmpush doctor device` against the real broker."""

from __future__ import annotations

from typing import Any

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.doctor.history import diagnose, load_history
from tests.doctor.conftest import Publisher
from tests.doctor.history_samples import ENROLLMENT, MIN, alert, failing_history, outcome
from tests.support.samples import NOW, SAMPLES


@pytest.mark.parametrize(("last", "expected"), [
    (outcome("r/E", "SKIPPED", NOW, reason="checked_out"), "unenrolled"),
    (outcome("r/E", "SKIPPED", NOW, reason="no_token"), "no_token"),
    (outcome("r/E", "FAILED", NOW, reason="WrongTopic"), "wrong_topic"),
    (outcome("r/E", "FAILED", NOW, status=400, reason="DeviceTokenNotForTopic"), "wrong_topic"),
    (outcome("r/E", "FAILED", NOW, status=400, reason="BadDeviceToken"), "stale_token"),
    (outcome("r/E", "FAILED", NOW, status=410, reason="Unregistered"), "unenrolled"),
    (outcome("r/E", "FAILED", NOW, status=403, reason="BadCertificate"), "apns_rejected"),
    (outcome("r/E", "DEAD_LETTERED", NOW, reason="timeout"), "dead_lettered"),
    (outcome("r/E", "UNANSWERED", NOW), "device_unreachable"),
    (outcome("r/E", "ANSWERED", NOW), "healthy"),
])
def test_diagnosis_from_the_latest_terminal_outcome(last: dict[str, Any], expected: str) -> None:
    older = [outcome("r0/E", "ANSWERED", NOW - MIN), outcome("r/E", "SENT", NOW - 1)]
    assert diagnose([*older, last], []).name == expected


def test_alert_wins_unless_the_device_answered_since() -> None:
    stale = alert("r1/E", "STALE_TOKEN", NOW, evidence={"newer_token_at": "x"})
    unanswered = [outcome("r1/E", "SENT", NOW), outcome("r1/E", "UNANSWERED", NOW + 5 * MIN)]
    diagnosis = diagnose(unanswered, [stale])
    assert diagnosis.name == "stale_token" and "newer_token_at=x" in diagnosis.why
    answered = [*unanswered, outcome("r2/E", "ANSWERED", NOW + 6 * MIN)]
    assert diagnose(answered, [stale]).name == "healthy"
    assert diagnose([outcome("r/E", "SENT", NOW)], []).name == "unknown"


@pytest.mark.kafka
def test_device_shows_record_history_alerts_and_diagnosis(
    kafka_settings: KafkaSettings, failing_device: Topics, publisher: Publisher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = failing_device
    outcomes, _ = failing_history()
    other = outcome("x/UDID-2", "ANSWERED", NOW, enrollment_id="UDID-2")
    publisher.send(topics.outcomes, "PushOutcome", "UDID-2", other)
    publisher.send(topics.outcomes, "PushOutcome", ENROLLMENT, b"\x00not avro")
    publisher.flush()

    history = load_history(kafka_settings, ENROLLMENT)
    assert [(o["job_id"], o["state"]) for o in history.outcomes] == [
        (o["job_id"], o["state"]) for o in outcomes]
    assert history.undecodable == 1 and history.record == SAMPLES["DeviceRecord"]
    assert history.diagnosis.name == "unenrolled"  # the 410 came after the alert

    assert main(["doctor", "device", ENROLLMENT]) == 0
    out = capsys.readouterr().out
    assert "enrollment UDID-1" in out and "state ENROLLED" in out
    assert "diagnosis: unenrolled (APNs no longer knows the token: 410 Unregistered)" in out
    assert "stale_push_magic job r2/UDID-1" in out and "duplicate_enrollment=UDID-1-old" in out
    for apns_id in ("id-0", "id-1", "id-2", "id-3", "id-3b"):
        assert apns_id in out
    assert "x/UDID-2" not in out
    assert "1 undecodable record(s) skipped" in out


@pytest.mark.kafka
def test_unknown_enrollment_and_missing_topics(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["doctor", "device", "nobody"]) == 1
    assert "registry: no record" in capsys.readouterr().out
    monkeypatch.setenv("MDMPUSH_KAFKA_TOPIC_PREFIX", "no-such-prefix.")
    assert main(["doctor", "device", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "topic no-such-prefix.mdm.push.outcomes.v1 does not exist" in err
