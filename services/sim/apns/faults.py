"""Fault injection for the APNs simulator, configured by values that can change at run time.

The sender's guarantees (no push lost, none burned, breakers, retries) are only proven if APNs
misbehaves in every way it does in production: 500/503 answers, reset connections, GOAWAY,
slowness, revoked certificates, unregistered tokens. :class:`Faults` is a plain mutable object the
simulator reads on every request, so a test can flip a field (from any thread: each assignment is
atomic) and the next request sees it. Decisions draw from one seeded ``random.Random`` per
simulator, so a run with the same seed and the same request order injects the same faults.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FaultDecision", "Faults"]

#: What happens to one request before it is validated.
FaultDecision = Literal["none", "500", "503", "reset"]

_ENV_PREFIX = "APNS_SIM_FAULT_"


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@dataclass
class Faults:
    """Faults to inject. Shares are probabilities per request in [0, 1], summed ≤ 1.

    - ``share_500`` / ``share_503``: answer 500 InternalServerError / 503 ServiceUnavailable.
    - ``share_reset``: abort the TCP connection while the request is in flight (every other
      request on that connection is lost too, as with a real reset).
    - ``goaway_after_streams``: after that many requests on a connection, answer them, send
      GOAWAY (NO_ERROR, debug data ``{"reason":"Shutdown"}``) and close, like APNs rotating
      connections. ``None``: never.
    - ``latency_ms`` (+ uniform ``latency_jitter_ms``): delay every answer without blocking the
      loop (other requests proceed meanwhile).
    - ``revoked_serials`` / ``revoked_topics``: requests on a connection whose client
      certificate has that serial or topic get 403 BadCertificate.
    - ``unregistered_tokens``: token (lower-case hex) → epoch ms: 410 Unregistered with that
      timestamp, whatever the device gateway says.
    """

    share_500: float = 0.0
    share_503: float = 0.0
    share_reset: float = 0.0
    goaway_after_streams: int | None = None
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    revoked_serials: set[int] = field(default_factory=set)
    revoked_topics: set[str] = field(default_factory=set)
    unregistered_tokens: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse nonsense early rather than injecting something else than asked."""
        shares = (self.share_500, self.share_503, self.share_reset)
        if any(s < 0 or s > 1 for s in shares) or sum(shares) > 1:
            raise ValueError("fault shares must be in [0, 1] and sum to at most 1")
        if self.goaway_after_streams is not None and self.goaway_after_streams < 1:
            raise ValueError("goaway_after_streams must be ≥ 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency must be ≥ 0")

    @property
    def any_share(self) -> bool:
        """Whether a random draw is needed at all (keeps the fault-free hot path draw-free)."""
        return self.share_500 > 0 or self.share_503 > 0 or self.share_reset > 0

    def decide(self, rng: random.Random) -> FaultDecision:
        """Draw the fault for one request."""
        r = rng.random()
        if r < self.share_500:
            return "500"
        r -= self.share_500
        if r < self.share_503:
            return "503"
        r -= self.share_503
        if r < self.share_reset:
            return "reset"
        return "none"

    def delay_s(self, rng: random.Random) -> float:
        """The answer delay for one request, in seconds (0 when no latency is configured)."""
        if self.latency_jitter_ms:
            return (self.latency_ms + rng.random() * self.latency_jitter_ms) / 1000.0
        return self.latency_ms / 1000.0

    def revoke(self, serials: Iterable[int] = (), topics: Iterable[str] = ()) -> None:
        """Revoke certificates by serial or topic (replaces the sets: assignment is atomic)."""
        self.revoked_serials = self.revoked_serials | set(serials)
        self.revoked_topics = self.revoked_topics | set(topics)

    def unregister(self, tokens: Iterable[str], at_ms: int | None = None) -> None:
        """Force 410 Unregistered for ``tokens`` (timestamp defaults to now)."""
        stamp = int(time.time() * 1000) if at_ms is None else at_ms
        self.unregistered_tokens = {
            **self.unregistered_tokens,
            **{t.lower(): stamp for t in tokens},
        }

    # -- configuration from outside the process -------------------------------------------

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add ``--fault-*`` flags; each defaults to its ``APNS_SIM_FAULT_*`` variable."""
        env = os.environ
        g = parser.add_argument_group("faults (env APNS_SIM_FAULT_<NAME>)")
        g.add_argument(
            "--fault-share-500", type=float, default=float(env.get(_ENV_PREFIX + "SHARE_500", 0))
        )
        g.add_argument(
            "--fault-share-503", type=float, default=float(env.get(_ENV_PREFIX + "SHARE_503", 0))
        )
        g.add_argument(
            "--fault-share-reset",
            type=float,
            default=float(env.get(_ENV_PREFIX + "SHARE_RESET", 0)),
        )
        goaway = env.get(_ENV_PREFIX + "GOAWAY_AFTER_STREAMS")
        g.add_argument(
            "--fault-goaway-after-streams", type=int, default=int(goaway) if goaway else None
        )
        g.add_argument(
            "--fault-latency-ms", type=float, default=float(env.get(_ENV_PREFIX + "LATENCY_MS", 0))
        )
        g.add_argument(
            "--fault-latency-jitter-ms",
            type=float,
            default=float(env.get(_ENV_PREFIX + "LATENCY_JITTER_MS", 0)),
        )
        g.add_argument(
            "--fault-revoked-serials",
            default=env.get(_ENV_PREFIX + "REVOKED_SERIALS", ""),
            help="comma-separated serials, decimal or 0x-hex",
        )
        g.add_argument(
            "--fault-revoked-topics",
            default=env.get(_ENV_PREFIX + "REVOKED_TOPICS", ""),
            help="comma-separated topics",
        )
        g.add_argument(
            "--fault-unregistered-tokens",
            default=env.get(_ENV_PREFIX + "UNREGISTERED_TOKENS", ""),
            help="comma-separated hex tokens",
        )
        g.add_argument("--fault-seed", type=int, default=int(env.get(_ENV_PREFIX + "SEED", 0)))

    @classmethod
    def from_arguments(cls, ns: argparse.Namespace) -> Faults:
        """Build from the parsed ``--fault-*`` flags of :meth:`add_arguments`."""
        faults = cls(
            share_500=float(ns.fault_share_500),
            share_503=float(ns.fault_share_503),
            share_reset=float(ns.fault_share_reset),
            goaway_after_streams=ns.fault_goaway_after_streams,
            latency_ms=float(ns.fault_latency_ms),
            latency_jitter_ms=float(ns.fault_latency_jitter_ms),
            revoked_serials={int(s, 0) for s in _csv(ns.fault_revoked_serials)},
            revoked_topics=set(_csv(ns.fault_revoked_topics)),
            seed=int(ns.fault_seed),
        )
        faults.unregister(_csv(ns.fault_unregistered_tokens))
        return faults
