"""What the sender does with an APNs answer: a pure mapping from response to verdict.

Kept apart from the transports so the policy is one table, testable without a network and the
same whichever library carried the push. Reasons and statuses are Apple's (provider API,
"Handling notification responses from APNs").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.sender.apns.types import ApnsResponse, TransportError


class Verdict(StrEnum):
    """The sender's next step for a job."""

    SENT = "sent"
    """APNs accepted the push: record the outcome."""
    PERMANENT = "permanent"
    """Retrying cannot help (bad token, wrong topic, malformed request): record the failure."""
    CERTIFICATE = "certificate"
    """The certificate is refused: open the breaker, retry the job later, do not burn it."""
    CONNECTION = "connection"
    """The connection failed: open the breaker, retry the job later, do not burn it."""
    TRANSIENT = "transient"
    """APNs or the stream hiccuped: retry this job with backoff."""


@dataclass(frozen=True, slots=True)
class Classification:
    """A verdict plus what the sender needs to act on it.

    ``long_backoff`` asks for a longer retry tier (429: this device is pushed too often).
    ``token_dead_since_ms`` is set for 410: stop pushing to the token from that time on.
    """

    verdict: Verdict
    reason: str
    long_backoff: bool = False
    token_dead_since_ms: int | None = None

    @property
    def opens_breaker(self) -> bool:
        """Certificate and connection failures pause the whole certificate, not one job."""
        return self.verdict in (Verdict.CERTIFICATE, Verdict.CONNECTION)

    @property
    def retry(self) -> bool:
        """The job goes to a retry tier (never burned) rather than to an outcome."""
        return self.verdict in (Verdict.CERTIFICATE, Verdict.CONNECTION, Verdict.TRANSIENT)


CERTIFICATE_REASONS = frozenset(
    {
        "BadCertificate",
        "BadCertificateEnvironment",
        "Forbidden",
        "ExpiredProviderToken",
        "InvalidProviderToken",
        "MissingProviderToken",
    }
)
"""403 reasons: the credential, not the push, is at fault; every job on it would fail."""

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

_TRANSPORT_VERDICTS = {
    TransportError.CERTIFICATE: Verdict.CERTIFICATE,
    TransportError.CONNECTION: Verdict.CONNECTION,
    TransportError.TIMEOUT: Verdict.CONNECTION,
    # GOAWAY-refused streams were never processed (RFC 9113 §6.8): retry, the transport has
    # already reconnected; APNs rotating a connection is routine, not a reason to pause.
    TransportError.GOAWAY: Verdict.TRANSIENT,
    TransportError.STREAM: Verdict.TRANSIENT,
    TransportError.CLOSED: Verdict.TRANSIENT,
}


_SENT = Classification(Verdict.SENT, "Success")
"""The verdict of nearly every answer, built once (it is immutable) rather than per push."""


def classify(response: ApnsResponse) -> Classification:
    """Map one answer (or transport error) to what the sender must do with its job."""
    status = response.status
    if status == 200:
        return _SENT
    if status is None:
        kind = response.error_kind or TransportError.CONNECTION
        return Classification(_TRANSPORT_VERDICTS[kind], f"transport:{kind.value}")
    reason = response.reason or f"HTTP {status}"
    if status == 410:
        return Classification(Verdict.PERMANENT, reason, token_dead_since_ms=response.timestamp_ms)
    if status == 403 or reason in CERTIFICATE_REASONS:
        return Classification(Verdict.CERTIFICATE, reason)
    if status == 429:
        return Classification(Verdict.TRANSIENT, reason, long_backoff=True)
    if status in TRANSIENT_STATUSES or status >= 500:
        return Classification(Verdict.TRANSIENT, reason)
    if 400 <= status < 500:
        # 400 BadDeviceToken/BadTopic/…, 404 BadPath, 405 MethodNotAllowed, 413 PayloadTooLarge:
        # the same request would be refused again.
        return Classification(Verdict.PERMANENT, reason)
    # 1xx/3xx never come from APNs: treat as a hiccup rather than burn the job.
    return Classification(Verdict.TRANSIENT, reason)
