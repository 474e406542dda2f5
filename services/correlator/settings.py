"""Correlator configuration (`MDMPUSH_CORRELATOR_*`); Kafka settings stay in `MDMPUSH_KAFKA_*`.

All durations are in simulated milliseconds of `services.common.clock.Clock`, the time base of
every event's timestamps, so a compressed clock shortens them in every process alike.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class CorrelatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_CORRELATOR_", frozen=True, extra="ignore")

    #: Silence after a 200 that triggers the one re-push (Apple: retry after several seconds).
    race_window_ms: int = 10_000
    #: A push this close to the enrollment's first TokenUpdate may have lost the enrollment race
    #: (an answer after the re-push is named `enrollment_race`). The race lasts under a second
    #: on the device, but the window must cover the pipeline's enrollment-to-push lag (registry,
    #: fan-out, sender): bench_accuracy's fresh batches were pushed p50 5-6 s, max 7.9 s (2,000
    #: devices) and 18.2 s (10,000) after enrolling on a loaded 2-core host, so 5 s misnamed up
    #: to 37 % of lost races. Wider costs only the name: every silent push is re-pushed anyway
    #: (`repush_silent`), and one that needed the re-push this soon after enrolling most likely
    #: met the race.
    race_enrollment_ms: int = 30_000
    #: Re-push every silent 200 once (Apple's advice), not only suspected enrollment races.
    repush_silent: bool = True
    #: No contact by then: UNANSWERED with a diagnosis.
    deadline_ms: int = 300_000
    #: The verdict on a silent push waits this long past its deadline for answers the device
    #: made in time but that reach the correlator late; only one stamped by the deadline counts
    #: (the alert's deadline_at stays the deadline). 10 s covers a gateway's retry and the
    #: check-in consumer's lag under load (the accuracy bench delivers in-time answers 6 s
    #: late; flagging lagged up to ~3 s past the deadline at p99 there), for 3 % of the
    #: default deadline in later alerts; each silent push is held that much longer (~140 B).
    checkin_grace_ms: int = 10_000
    #: Wrong-magic push this long after the first suspected one makes the device heal itself.
    self_heal_delay_ms: int = 25 * HOUR_MS
    #: A push or check-in stamped later than now plus this is read as stamped now (clocks of
    #: different hosts differ a little; a year-3000 stamp would otherwise never come due).
    future_tolerance_ms: int = 300_000
    #: Timer resolution: deadlines are bucketed by this many ms (memory: 4 bytes per timer).
    timer_tick_ms: int = 100
    #: Consumer group of the outcomes (`<group_id>.contacts` remembers dead-lettered check-ins).
    group_id: str = "mdmpush-correlator"
    #: Records taken per consume() call from each input.
    consume_batch: int = 500
    #: Job ids whose verdict was given recently, to drop a duplicated SENT outcome (and as many
    #: FAILED/DEAD_LETTERED ones, for late riders); held as hashes in memory allocated at start
    #: (~20 bytes per id each, recent.py), so RSS does not climb while they fill.
    dedupe_capacity: int = 100_000
    #: Silent this long (no message at all): one re-arm push on the bulk lane (0: never).
    rearm_after_ms: int = DAY_MS
    #: Re-arms of a fleet gone silent at once are spread over this window (each enrollment's
    #: offset in it is a stable hash of its id), so they never burst.
    rearm_spread_ms: int = 6 * HOUR_MS
    #: Re-arm pushes per minute at most (per instance, simulated minutes); the sender's bulk
    #: throttle applies on top.
    rearm_per_minute: float = 600.0
    #: Silent this long: marked INACTIVE (the fan-out skips its bulk pushes) until it next
    #: contacts (0: never).
    inactive_after_ms: int = 7 * DAY_MS
    #: Enrollment rows the care sweep looks at per loop turn (bounded work per turn).
    care_scan_rows: int = 500
    #: Enrollment rows kept at most: past it, check-ins of enrollments never seen before are
    #: refused (counted), so a flood of made-up ids cannot grow the state without bound.
    max_enrollments: int = 2_000_000
    #: Prometheus port; 0 disables the endpoint.
    metrics_port: int = 9103
    #: Longest a start waits for Kafka to answer before it is tried again (with back-off).
    kafka_wait_s: float = 30.0
    #: Longest pause between two starts while Kafka is unavailable (doubling from 1 s); the
    #: process stays up and /readyz says why it is not ready.
    retry_backoff_max_s: float = 30.0
    #: Longest the start-up replay of the check-ins (or a restore of the state) may take.
    replay_timeout_s: float = 600.0
    #: Longest a batch's prerequisites may take to be acknowledged before the session ends
    #: (Kafka unavailable: a new one starts once it answers).
    flush_timeout_s: float = 30.0
    #: Longest close() may take (group leave, flush): well under a pod's 30 s grace period.
    close_timeout_s: float = 15.0
