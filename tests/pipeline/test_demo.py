"""The README's first command ends in `mdmpush demo`: its pipeline run, on a small fleet."""

from __future__ import annotations

import pytest

from services.cli.demo_cmd import demo
from services.common.settings import KafkaSettings


@pytest.mark.kafka
def test_demo_accounts_for_every_push_and_explains_a_device(
    kafka_settings: KafkaSettings, capsys: pytest.CaptureFixture[str],
) -> None:
    demo(kafka_settings, 40)
    out = capsys.readouterr().out
    assert "100.0 % right; 0 push(es) unaccounted for" in out, out[-3000:]
    assert "[demo] alerts by diagnosis: " in out
    assert "stale_push_magic" in out  # the device `doctor` explains
    assert "[demo] mdmpush doctor feedback" in out and "apns-id" in out.lower()
