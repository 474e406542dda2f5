"""APNs store-and-forward: the latest undelivered push per device token, until it expires.

APNs keeps only one notification per device (a newer one replaces the older) and drops it at its
``apns-expiration``; a push with expiration 0 is delivered now or never. MDM servers depend on
this — several wake-ups to an offline device become one on reconnect — so the simulator models it
exactly. A lock guards the store because the fleet may report a device connection from its own
thread while the simulator's loop stores new pushes.

That interleaving has a race the store closes: the loop asks the gateway to deliver, hears
"offline", and stores the push; if the device came online (and its connection took whatever was
stored) between the two, the push would wait for the next reconnect. So the loop reads
:attr:`PushStore.connects` before ``deliver`` and stores with :meth:`PushStore.put_offline`,
which refuses when that device has connected since (the loop then delivers again), atomically
with :meth:`PushStore.connected`'s take.
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
        #: Device connections so far (a sequence number); read without the lock.
        self.connects = 0
        #: Token → value of ``connects`` at its latest connection (cleared by purge_expired).
        self._connected_at: dict[str, int] = {}
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

    def put_offline(self, push: AcceptedPush, now: float, connects_seen: int) -> bool:
        """Store a push the gateway just found offline, unless its device connected since
        ``connects`` was ``connects_seen`` (read before asking the gateway).

        False: the device connected in between and its :meth:`connected` may have missed this
        push; nothing is stored and the caller delivers again. True: stored (or already
        expired, so dropped).
        """
        with self._lock:
            if self._connected_at.get(push.token_hex, 0) > connects_seen:
                return False
            if push.expired(now):
                return True
            if self._by_token.get(push.token_hex) is not None:
                self.replaced += 1
            self._by_token[push.token_hex] = push
            self.stored += 1
        return True

    def put_back(self, push: AcceptedPush, now: float) -> bool:
        """Store again a push taken for a device that was offline after all, unless a newer
        push for the token was stored meanwhile (APNs keeps the latest) or it expired."""
        with self._lock:
            self.forwarded -= 1  # taken, but not forwarded after all
            if push.expired(now):
                self.expired += 1
                return False
            if push.token_hex in self._by_token:
                self.replaced += 1
                return False
            self._by_token[push.token_hex] = push
        return True

    def take(self, token_hex: str, now: float) -> AcceptedPush | None:
        """Remove and return the token's push if it has not expired (an expired one is dropped)."""
        with self._lock:
            return self._take(token_hex, now)

    def connected(self, token_hex: str, now: float) -> AcceptedPush | None:
        """A device came online: note it (see :meth:`put_offline`) and :meth:`take` its push."""
        with self._lock:
            self.connects += 1
            self._connected_at[token_hex] = self.connects
            return self._take(token_hex, now)

    def _take(self, token_hex: str, now: float) -> AcceptedPush | None:
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
        """Drop every expired push; returns how many (keeps memory bounded on long runs).

        Also forgets the recorded connections: call it on the simulator's loop, where no
        deliver-then-:meth:`put_offline` is in progress, so none of them can matter any more.
        """
        with self._lock:
            self._connected_at.clear()
            dead = [t for t, p in self._by_token.items() if p.expired(now)]
            for token in dead:
                del self._by_token[token]
            self.expired += len(dead)
        return len(dead)

    def __len__(self) -> int:
        return len(self._by_token)
