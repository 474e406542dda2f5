"""The one small interface the sender drives, whichever HTTP/2 library carries the pushes.

The sender is a synchronous Kafka loop, so the interface is non-blocking: ``submit`` only
enqueues, ``poll`` drives I/O for at most ``timeout_s`` and returns whatever completed. Every
submitted request comes back from ``poll`` (or from ``close``) exactly once, as an HTTP answer
or as a transport error: nothing is lost, nothing is answered twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from services.sender.apns.types import ApnsRequest, ApnsResponse

PRODUCTION_HOST = "api.push.apple.com"
SANDBOX_HOST = "api.sandbox.push.apple.com"
APNS_PORTS = (443, 2197)
"""APNs listens on 443 and, for networks that block it, on 2197."""


class Environment(StrEnum):
    """Which APNs service a push certificate belongs to."""

    PRODUCTION = "production"
    SANDBOX = "sandbox"


def apns_base_url(environment: Environment, port: int = 443) -> str:
    """The base URL of Apple's APNs service; tests and the simulator pass their own URL."""
    if port not in APNS_PORTS:
        raise ValueError(f"APNs listens on ports {APNS_PORTS}, not {port}")
    host = PRODUCTION_HOST if environment is Environment.PRODUCTION else SANDBOX_HOST
    return f"https://{host}:{port}"


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """What one client needs: where to connect and which certificate to present.

    Certificate and key are file paths from configuration (mounted secrets), never event
    content. ``ca_path`` None verifies against the system trust store (real APNs).
    ``max_concurrent_streams`` is our own ceiling; the server's SETTINGS_MAX_CONCURRENT_STREAMS
    (1,000 on APNs, sometimes lower right after connecting) is honoured on top of it.
    """

    base_url: str
    cert_path: Path
    key_path: Path
    ca_path: Path | None = None
    max_concurrent_streams: int = 1000
    request_timeout_s: float = 15.0
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0


class ApnsTransport(Protocol):
    """One HTTP/2 connection to one APNs endpoint with one client certificate."""

    def submit(self, request: ApnsRequest) -> None:
        """Queue a request; never blocks on the network."""
        ...

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        """Drive I/O for up to ``timeout_s`` and return the requests completed meanwhile."""
        ...

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet returned by ``poll``."""
        ...

    @property
    def last_activity(self) -> float:
        """``time.monotonic()`` of the last submit or completion, for idle closing."""
        ...

    def close(self) -> list[ApnsResponse]:
        """Close the connection; every request still in flight is returned as a CLOSED error."""
        ...

    def unsend(self) -> list[ApnsRequest]:
        """Take back the requests submitted but not yet written to the connection (they will
        never be sent, nor answered); requests already on their way stay in flight."""
        ...


def request_headers(request: ApnsRequest) -> list[tuple[str, str]]:
    """The APNs headers every push carries: push type, topic, explicit expiration and apns-id."""
    return [
        ("apns-push-type", request.push_type),
        ("apns-topic", request.topic),
        ("apns-priority", str(request.priority)),
        ("apns-expiration", str(request.expiration)),
        ("apns-id", request.apns_id),
    ]


def parse_error_body(body: bytes) -> tuple[str | None, int | None]:
    """Extract ``reason`` and the 410 ``timestamp`` from an APNs error body.

    A body that is not the documented JSON yields (None, None) rather than an exception: a
    misbehaving server must not make the sender crash, the status alone still classifies.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(document, dict):
        return None, None
    reason = document.get("reason")
    timestamp = document.get("timestamp")
    return (
        reason if isinstance(reason, str) else None,
        timestamp if isinstance(timestamp, int) and not isinstance(timestamp, bool) else None,
    )
