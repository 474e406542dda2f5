"""APNs store-and-forward: the latest undelivered push per device token, until it expires.

APNs keeps only one notification per device (a newer one replaces the older) and drops it at its
``apns-expiration``; a push with expiration 0 is delivered now or never. MDM servers depend on
this — several wake-ups to an offline device become one on reconnect — so the simulator models it
exactly. A lock guards the store because the fleet may report a device connection from its own
thread while the simulator's loop stores new pushes.
"""

from __future__ import annotations

import threading

from services.sim.apns.fleet_port import AcceptedPush

__all__ = ["PushStore"]


class PushStore:
    """Latest push per token; counters say what happened to stored pushes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_token: dict[str, AcceptedPush] = {}
        self.stored = 0
        self.replaced = 0
        self.forwarded = 0
        self.expired = 0

    def put(self, push: AcceptedPush, now: float) -> bool:
        """Keep ``push`` for its token (replacing an older one); False if already expired."""
        if push.expired(now):
            return False
        with self._lock:
            if self._by_token.get(push.token_hex) is not None:
                self.replaced += 1
            self._by_token[push.token_hex] = push
            self.stored += 1
        return True

    def take(self, token_hex: str, now: float) -> AcceptedPush | None:
        """Remove and return the token's push if it has not expired (an expired one is dropped)."""
        with self._lock:
            push = self._by_token.pop(token_hex, None)
            if push is None:
                return None
            if push.expired(now):
                self.expired += 1
                return None
            self.forwarded += 1
            return push

    def peek(self, token_hex: str) -> AcceptedPush | None:
        """The stored push for a token, left in place (for tests and diagnostics)."""
        with self._lock:
            return self._by_token.get(token_hex)

    def purge_expired(self, now: float) -> int:
        """Drop every expired push; returns how many (keeps memory bounded on long runs)."""
        with self._lock:
            dead = [t for t, p in self._by_token.items() if p.expired(now)]
            for token in dead:
                del self._by_token[token]
            self.expired += len(dead)
        return len(dead)

    def __len__(self) -> int:
        return len(self._by_token)
