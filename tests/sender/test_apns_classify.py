"""The verdict table: every APNs answer and transport error the sender must tell apart."""

from __future__ import annotations

import pytest

from services.sender.apns.classify import Verdict, classify
from services.sender.apns.types import ApnsResponse, TransportError


def answer(status: int | None, reason: str | None = None, **extra: object) -> ApnsResponse:
    return ApnsResponse(
        correlation_id="job",
        apns_id="00000000-0000-0000-0000-000000000000",
        status=status,
        reason=reason,
        latency_ms=1.0,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("status", "reason", "verdict"),
    [
        (200, None, Verdict.SENT),
        (400, "BadDeviceToken", Verdict.PERMANENT),
        (400, "DeviceTokenNotForTopic", Verdict.PERMANENT),
        (400, "BadTopic", Verdict.PERMANENT),
        (400, "TopicDisallowed", Verdict.PERMANENT),
        (400, "PayloadEmpty", Verdict.PERMANENT),
        (400, "BadExpirationDate", Verdict.PERMANENT),
        (400, "BadMessageId", Verdict.PERMANENT),
        (400, "BadPriority", Verdict.PERMANENT),
        (400, "DuplicateHeaders", Verdict.PERMANENT),
        (400, None, Verdict.PERMANENT),
        (403, "BadCertificate", Verdict.CERTIFICATE),
        (403, "BadCertificateEnvironment", Verdict.CERTIFICATE),
        (403, "Forbidden", Verdict.CERTIFICATE),
        (403, None, Verdict.CERTIFICATE),
        (404, "BadPath", Verdict.PERMANENT),
        (405, "MethodNotAllowed", Verdict.PERMANENT),
        (410, "Unregistered", Verdict.PERMANENT),
        (410, "ExpiredToken", Verdict.PERMANENT),
        (413, "PayloadTooLarge", Verdict.PERMANENT),
        (408, None, Verdict.TRANSIENT),
        (429, "TooManyRequests", Verdict.TRANSIENT),
        (500, "InternalServerError", Verdict.TRANSIENT),
        (503, "ServiceUnavailable", Verdict.TRANSIENT),
        (503, "Shutdown", Verdict.TRANSIENT),
        (502, None, Verdict.TRANSIENT),
    ],
)
def test_http_answers(status: int, reason: str | None, verdict: Verdict) -> None:
    result = classify(answer(status, reason))
    assert result.verdict is verdict
    assert result.opens_breaker is (verdict is Verdict.CERTIFICATE)
    assert result.retry is (verdict in (Verdict.CERTIFICATE, Verdict.TRANSIENT))
    assert result.reason == (reason or ("Success" if status == 200 else f"HTTP {status}"))


@pytest.mark.parametrize(
    ("kind", "verdict"),
    [
        (TransportError.CERTIFICATE, Verdict.CERTIFICATE),
        (TransportError.CONNECTION, Verdict.CONNECTION),
        (TransportError.TIMEOUT, Verdict.CONNECTION),
        (TransportError.GOAWAY, Verdict.TRANSIENT),
        (TransportError.STREAM, Verdict.TRANSIENT),
        (TransportError.CLOSED, Verdict.TRANSIENT),
    ],
)
def test_transport_errors_are_never_burned(kind: TransportError, verdict: Verdict) -> None:
    result = classify(answer(None, error_kind=kind, error="boom"))
    assert result.verdict is verdict
    assert result.retry
    assert result.opens_breaker is (verdict in (Verdict.CERTIFICATE, Verdict.CONNECTION))
    assert result.reason == f"transport:{kind.value}"


def test_410_carries_the_token_death_time() -> None:
    result = classify(answer(410, "Unregistered", timestamp_ms=1_700_000_000_000))
    assert result.token_dead_since_ms == 1_700_000_000_000
    assert classify(answer(400, "BadDeviceToken")).token_dead_since_ms is None


def test_only_429_asks_for_the_long_tier() -> None:
    assert classify(answer(429, "TooManyRequests")).long_backoff
    assert not classify(answer(503, "ServiceUnavailable")).long_backoff
