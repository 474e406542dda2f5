"""Prometheus counters of the fan-out (served by `__main__` when a metrics port is set)."""

from __future__ import annotations

from prometheus_client import Counter

from services.fanout.registry import CheckinRefusal, SkipReason

JOBS = Counter("mdmpush_fanout_jobs_total", "PushJobs produced and acknowledged", ["lane"])
#: Targets that got a SKIPPED outcome instead of a job, by reason; `coalesced` (rides on an
#: outstanding push) and `inactive` (the correlator marked the enrollment inactive) among them.
SKIPPED = Counter("mdmpush_fanout_skipped_total", "Targets skipped, by reason", ["reason"])
FOREIGN_CHECKINS = Counter(
    "mdmpush_fanout_foreign_checkins_total",
    "Check-ins refused because they name another tenant than the enrollment's owner",
)
CHECKINS_REFUSED = Counter(
    "mdmpush_fanout_checkins_refused_total",
    "Check-ins not applied to the registry (no tenant; not enrolling and unknown), by reason",
    ["reason"],
)
CHECKINS_CLAMPED = Counter(
    "mdmpush_fanout_future_times_clamped_total",
    "Check-ins (and 410s) stamped further ahead of the fan-out's clock than the tolerance, "
    "applied at the fan-out's now",
    ["input"],
)
for _clamped in ("checkin", "token_dead"):
    CHECKINS_CLAMPED.labels(_clamped)
PENDING_EXPIRED = Counter(
    "mdmpush_fanout_pending_enrollments_expired_total",
    "Enrollments removed from the registry: authenticated, no TokenUpdate within the TTL",
)
CARRIERS_ANSWERED = Counter(
    "mdmpush_fanout_carriers_answered_total",
    "Outstanding pushes (carriers) ended by a check-in of their enrollment",
)
POISON = Counter(
    "mdmpush_fanout_poison_total", "Undecodable input records set aside", ["input"]
)
DUPLICATE_SLICES = Counter(
    "mdmpush_fanout_duplicate_slices_total", "Redelivered slices recognised as already expanded"
)
REGISTRY_UPDATES = Counter(
    "mdmpush_fanout_registry_updates_total", "Registry records changed and published", ["cause"]
)
REGISTRY_INPUTS = Counter(
    "mdmpush_fanout_registry_inputs_total",
    "Check-ins and 410s applied where consumed (local) or sent to registry-updates (forwarded)",
    ["path"],
)

REFUSED = Counter(
    "mdmpush_fanout_refused_total",
    "Records Kafka refused permanently (too large, not authorised), by what they were",
    ["record"],
)
DEAD_LETTERED_SLICES = Counter(
    "mdmpush_fanout_dead_lettered_slices_total",
    "Slices whose request went to the DLQ because Kafka refused their jobs permanently",
)
DEAD_LETTERED_TARGETS = Counter(
    "mdmpush_fanout_dead_lettered_targets_total",
    "Targets given a DEAD_LETTERED outcome: their request's records were refused by Kafka for good",
)

#: What a refused record can be.
REFUSED_RECORDS = ("job", "registry", "dead_token")
for _record in REFUSED_RECORDS:
    REFUSED.labels(_record)

#: The inputs a poison record can come from. Their series are exported at 0 from the start, so
#: the first one is an increase() (deploy/prometheus/alerts.yaml alerts on it).
POISON_INPUTS = ("checkins", "outcomes", "requests", "config", "activity")
for _input in POISON_INPUTS:
    POISON.labels(_input)

#: Every skip reason and refusal is exported at 0 from the start (counted under its own name:
#: foreign_tenant is reported as unknown_enrollment on the outcome, counted apart here).
for _reason in SkipReason:
    SKIPPED.labels(_reason.value)
for _refusal in (CheckinRefusal.NO_TENANT, CheckinRefusal.UNKNOWN_ENROLLMENT):
    CHECKINS_REFUSED.labels(_refusal.value)
