"""Authentication at the gateway: which principal sent a request, and which tenant it acts for.

Pure logic over `services.common.principals`; the HTTP handlers turn its exceptions into 401/403.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import MdmPushError
from services.common.limits import check_tenant
from services.common.principals import NotAllowed, Principal, Principals

log = logging.getLogger(__name__)

#: The principal of every request when the gateway runs with MDMPUSH_GATEWAY_INSECURE_DEV.
INSECURE_DEV = Principal("insecure-dev", ())


class Unauthenticated(MdmPushError):
    """No valid credential; `str()` says which one was expected (never what was sent)."""


@dataclass(frozen=True, slots=True)
class Authenticator:
    principals: Principals
    insecure_dev: bool
    default_tenant: str

    def api_key(self, authorization: str | None) -> Principal:
        """HTTP Basic with an API key as password. The user is not checked: the key alone
        identifies the principal (NanoMDM clients send `nanomdm`, MicroMDM's `micromdm`)."""
        if self.insecure_dev:
            return INSECURE_DEV
        password = _basic_password(authorization)
        principal = self.principals.by_api_key(password) if password else None
        if principal is None:
            raise Unauthenticated("HTTP Basic auth with an API key as password required")
        return principal

    def webhook(self, body: bytes, signature: str | None) -> Principal:
        if self.insecure_dev:
            return INSECURE_DEV
        principal = self.principals.by_webhook_signature(body, signature)
        if principal is None:
            raise Unauthenticated("missing or invalid X-Hmac-Signature")
        return principal

    def tenant(self, principal: Principal, requested: str | None) -> str:
        """The tenant the request acts for; NotAllowed (403) when the principal may not,
        InvalidInput (400) for a malformed ?tenant= (an empty one too: it names nothing)."""
        if requested is not None:
            check_tenant(requested)
        if principal is INSECURE_DEV:
            return check_tenant(requested or self.default_tenant)
        return principal.tenant_for(requested)


def _basic_password(header: str | None) -> bytes | None:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):  # non-ASCII header text, or not base64
        return None
    _user, sep, password = decoded.partition(b":")
    return password if sep and password else None


@dataclass
class RateLimiter:
    """A token bucket per principal: `rate` requests per second, `burst` at once.

    Bounded memory: principals are configured, so there are as many buckets as principals.
    """

    rate: float
    burst: int
    now: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def retry_after(self, key: str) -> int:
        """0 if a request may go now (and takes a token), else whole seconds to wait."""
        now = self.now()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))


__all__ = ["INSECURE_DEV", "Authenticator", "NotAllowed", "RateLimiter", "Unauthenticated"]
