"""The pipeline's clock, which tests and the demo may compress (25 simulated hours in seconds).

Every timestamp a service writes into an event, and every deadline the correlator and the device
fleet reason about, comes from `Clock.now_ms()`. With `MDMPUSH_CLOCK_SPEED=3600` and a shared
`MDMPUSH_CLOCK_ORIGIN_MS`, one real second is one simulated hour in every process alike.
Kafka-level scheduling (retry tiers, throttles) stays on real time: it is about the broker and
APNs, which are not simulated.
"""

from __future__ import annotations

import time

from pydantic_settings import BaseSettings, SettingsConfigDict


class ClockSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_CLOCK_", frozen=True, extra="ignore")

    #: Simulated seconds per real second; 1 in production.
    speed: float = 1.0
    #: Real epoch ms at which simulated time equals real time; processes sharing a compressed
    #: clock must share this value.
    origin_ms: int = 0


class Clock:
    """now = origin + (real_now - origin) * speed, in epoch milliseconds."""

    def __init__(self, speed: float = 1.0, origin_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self.origin_ms = origin_ms if origin_ms else int(time.time() * 1000)

    @classmethod
    def from_settings(cls, settings: ClockSettings | None = None) -> Clock:
        s = settings or ClockSettings()
        return cls(s.speed, s.origin_ms or None)

    def now_ms(self) -> int:
        real = time.time() * 1000
        if self.speed == 1.0:
            return int(real)
        return int(self.origin_ms + (real - self.origin_ms) * self.speed)

    def real_seconds(self, simulated_ms: float) -> float:
        """Real seconds that `simulated_ms` of simulated time takes (for sleeps and timers)."""
        return simulated_ms / 1000.0 / self.speed
