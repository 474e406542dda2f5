"""Prometheus counters of the fan-out (served by `__main__` when a metrics port is set)."""

from __future__ import annotations

from prometheus_client import Counter

JOBS = Counter("mdmpush_fanout_jobs_total", "PushJobs produced and acknowledged", ["lane"])
SKIPPED = Counter("mdmpush_fanout_skipped_total", "Targets skipped, by reason", ["reason"])
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

#: What a refused record can be.
REFUSED_RECORDS = ("job", "registry", "dead_token")
for _record in REFUSED_RECORDS:
    REFUSED.labels(_record)

#: The inputs a poison record can come from. Their series are exported at 0 from the start, so
#: the first one is an increase() (deploy/prometheus/alerts.yaml alerts on it).
POISON_INPUTS = ("checkins", "outcomes", "requests", "config")
for _input in POISON_INPUTS:
    POISON.labels(_input)
