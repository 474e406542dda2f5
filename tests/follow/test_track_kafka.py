"""`track()` and `mdmpush follow` on the real broker: a request published with the SDK, outcomes
as the services write them, read from the request's time on (older records are never seen)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from services.sdk.publisher import PushPublisher, PushRequest
from services.sdk.track import PENDING, Progress, RequestNotFoundError, track
from tests.follow.outcomes import produce_outcomes

HOUR_MS = 3_600_000


def next_until(progress: Iterator[Progress], predicate: Any) -> Progress:
    for p in progress:
        if predicate(p):
            return p
    raise AssertionError("track() ended first")


@pytest.mark.kafka
def test_track_follows_one_request_from_its_time_to_completion(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    request = PushRequest(tenant="acme", enrollment_ids=["E1", "E2", "E3"], initiator="user")
    # Two hours before the request: records a read from the beginning would count as verdicts.
    produce_outcomes(kafka_settings, cli_env, request.request_id,
                     [(t, "FAILED", "BadDeviceToken") for t in ("E1", "E2", "E3")],
                     at_ms=int(time.time() * 1000) - 2 * HOUR_MS)
    rid = PushPublisher(kafka_settings).publish(request)

    progress = track(rid, settings=kafka_settings, interval_s=0.2, timeout_s=120)
    first = next(progress)
    assert first.by_state == {PENDING: 3} and not first.complete

    produce_outcomes(kafka_settings, cli_env, rid, [("E1", "SENT", None),
                                                    ("E2", "SKIPPED", "unknown_enrollment")])
    mid = next_until(progress, lambda p: p.by_state == {"SENT": 1, "SKIPPED": 1, PENDING: 1})
    assert not mid.complete and mid.terminal == 1

    produce_outcomes(kafka_settings, cli_env, rid, [("E1", "ANSWERED", None),
                                                    ("E3", "UNANSWERED", "device_unreachable")])
    last = next_until(progress, lambda p: p.complete)
    assert last.by_state == {"ANSWERED": 1, "SKIPPED": 1, "UNANSWERED": 1}
    assert last.reasons["UNANSWERED"] == {"device_unreachable": 1}
    assert list(progress) == []  # it ends once complete

    assert main(["follow", rid, "--since", "10m"]) == 0
    out = capsys.readouterr()
    assert "3 target(s), complete" in out.out and "device_unreachable 1" in out.out
    assert "BadDeviceToken" not in out.out  # the records before the request were not read
    assert f"{rid}: 3/3 done" in out.err


@pytest.mark.kafka
def test_follow_gives_up_at_its_timeout_and_an_unknown_request_is_a_clear_error(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    rid = PushPublisher(kafka_settings).publish(
        PushRequest(tenant="acme", enrollment_ids=["E1", "E2"]))
    produce_outcomes(kafka_settings, cli_env, rid, [("E1", "SENT", None)])
    assert main(["follow", rid, "--timeout", "3", "--interval", "0.2"]) == 1
    out = capsys.readouterr()
    assert "NOT complete" in out.out and "SENT" in out.out and "PENDING" in out.out

    with pytest.raises(RequestNotFoundError, match="--since"):
        next(track("no-such-request", settings=kafka_settings))
    assert main(["follow", "no-such-request", "--since", "5m"]) == 2
    assert "is not on" in capsys.readouterr().err
