"""Value types exchanged between the sender and an APNs transport.

They are plain slotted dataclasses, free of any I/O detail so the classification and the sender
can be tested without a network. Not frozen: two are built per push, and a frozen dataclass sets
each field through ``object.__setattr__`` (about 3x the cost of a plain ``__init__``, 2-3 % of the
sender's CPU in a profile). Nothing hashes them or relies on immutability; by convention no
one changes one after it is built (a request is handed to the httpx transport's thread as is).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TransportError(StrEnum):
    """Why a request got no HTTP answer, normalised across transport libraries.

    Each transport maps its own exceptions or error codes onto these kinds, so the verdict
    (see ``classify``) never depends on which library carried the request.
    """

    CERTIFICATE = "certificate"
    """TLS handshake or certificate problem: bad client cert or key, rejected by the server."""
    CONNECTION = "connection"
    """Could not connect, DNS failure, connection reset or closed with the request in flight."""
    TIMEOUT = "timeout"
    """No answer within the per-request timeout."""
    GOAWAY = "goaway"
    """The server sent GOAWAY before processing the stream: safe to retry, never delivered."""
    STREAM = "stream"
    """This stream alone was reset (RST_STREAM); the connection stays usable."""
    CLOSED = "closed"
    """The transport was closed by us while the request was still in flight."""


@dataclass(slots=True)
class ApnsRequest:
    """One push to one device token.

    ``expiration`` is always explicit (epoch seconds; 0 means "deliver now or never") and
    ``apns_id`` is always sent, so every APNs answer can be matched to the job that caused it.
    """

    correlation_id: str
    token_hex: str
    topic: str
    payload: bytes
    apns_id: str
    expiration: int
    push_type: str = "mdm"
    priority: int = 10


@dataclass(slots=True)
class ApnsResponse:
    """The single answer to one ``ApnsRequest``: an HTTP status, or a transport error.

    Exactly one of ``status`` and ``error_kind`` is set. ``timestamp_ms`` is APNs' "token
    invalid since" time of a 410 answer; ``latency_ms`` runs from submit to completion.
    """

    correlation_id: str
    apns_id: str
    status: int | None
    reason: str | None
    latency_ms: float
    timestamp_ms: int | None = None
    error_kind: TransportError | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True for the one answer that means APNs accepted the push."""
        return self.status == 200
