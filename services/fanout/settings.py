"""Fan-out settings (`MDMPUSH_FANOUT_*`); the broker and topic prefix come from KafkaSettings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.correlator.settings import CorrelatorSettings


class FanoutSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_FANOUT_", frozen=True, extra="ignore")

    #: faust app id = consumer group and prefix of the internal topics; the Kafka topic prefix is
    #: prepended, so two deployments (or two tests) sharing a broker never share state.
    app_id: str = "mdmpush-fanout"
    #: faust's data directory (table metadata); the tables themselves are rebuilt from Kafka.
    data_dir: Path = Path(".state/fanout")
    #: Partitions of the registry table and its internal topics: the unit of parallelism across
    #: workers. Changing it after the first start needs a new app_id (the registry re-keys).
    partitions: int = Field(default=12, ge=1)
    #: Targets per produced-and-acknowledged batch: the most a crash can repeat per slice.
    chunk_size: int = Field(default=1000, ge=1)
    #: Seconds between offset commits (faust's broker_commit_interval).
    commit_interval_s: float = Field(default=1.0, gt=0)
    #: Seconds to wait for the push policies to be read before expanding anyway (1 shard).
    policy_load_timeout_s: float = Field(default=30.0, gt=0)
    #: Port of the Prometheus /metrics endpoint; 0 disables it.
    metrics_port: int = Field(default=0, ge=0)
    #: Per-device coalescing (docs/coalescing.md): a bulk target with an outstanding push gets
    #: SKIPPED `coalesced` naming that push instead of a second one. Priority is never coalesced.
    coalesce: bool = True
    #: Simulated ms a push stays outstanding without a check-in from its enrollment; unset: the
    #: correlator's MDMPUSH_CORRELATOR_DEADLINE_MS, the time it waits for that check-in.
    coalesce_window_ms: int | None = Field(default=None, ge=1)
    #: Simulated ms an enrollment that authenticated but never sent a TokenUpdate stays in the
    #: registry (docs/fanout-bounds.md): bounds what unknown devices can add.
    pending_enrollment_ttl_ms: int = Field(default=86_400_000, ge=1)
    #: Simulated ms a check-in's `occurred_at` (or a 410's time) may lie ahead of the fan-out's
    #: clock; one further ahead is applied at the fan-out's now (docs/fanout-bounds.md).
    future_tolerance_ms: int = Field(default=300_000, ge=0)
    #: Real seconds between two sweeps of the registry for expired pending enrollments.
    registry_sweep_interval_s: float = Field(default=60.0, gt=0)

    def effective_coalesce_window_ms(self) -> int:
        """The window, defaulting to the correlator's deadline (its settings are the one source
        of that value; reading them touches no Kafka)."""
        if self.coalesce_window_ms is not None:
            return self.coalesce_window_ms
        return CorrelatorSettings().deadline_ms

    def effective_app_id(self, topic_prefix: str) -> str:
        return f"{topic_prefix}{self.app_id}"
