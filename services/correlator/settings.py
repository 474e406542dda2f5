"""Correlator configuration (`MDMPUSH_CORRELATOR_*`); Kafka settings stay in `MDMPUSH_KAFKA_*`.

All durations are in simulated milliseconds of `services.common.clock.Clock`, the time base of
every event's timestamps, so a compressed clock shortens them in every process alike.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

HOUR_MS = 3_600_000


class CorrelatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_CORRELATOR_", frozen=True, extra="ignore")

    #: Silence after a 200 that triggers the one re-push (Apple: retry after several seconds).
    race_window_ms: int = 10_000
    #: A push this close to the enrollment's first TokenUpdate may have lost the enrollment race.
    race_enrollment_ms: int = 5_000
    #: Re-push every silent 200 once (Apple's advice), not only suspected enrollment races.
    repush_silent: bool = True
    #: No contact by then: UNANSWERED with a diagnosis.
    deadline_ms: int = 300_000
    #: Wrong-magic push this long after the first suspected one makes the device heal itself.
    self_heal_delay_ms: int = 25 * HOUR_MS
    #: Timer resolution: deadlines are bucketed by this many ms (memory: 4 bytes per timer).
    timer_tick_ms: int = 100
    #: Consumer group of the outcomes (`<group_id>.contacts` remembers dead-lettered check-ins).
    group_id: str = "mdmpush-correlator"
    #: Records taken per consume() call from each input.
    consume_batch: int = 500
    #: Job ids whose verdict was given recently, to drop a duplicated SENT outcome.
    dedupe_capacity: int = 100_000
    #: Prometheus port; 0 disables the endpoint.
    metrics_port: int = 9103
    #: Longest start-up waits for Kafka to answer before giving up (exit 1).
    kafka_wait_s: float = 30.0
    #: Longest the start-up replay of the check-ins (or a restore of the state) may take.
    replay_timeout_s: float = 600.0
    #: Longest a batch's prerequisites may take to be acknowledged before the process stops.
    flush_timeout_s: float = 30.0
    #: Longest close() may take (group leave, flush): well under a pod's 30 s grace period.
    close_timeout_s: float = 15.0
