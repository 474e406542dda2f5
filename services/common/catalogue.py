"""The one definition of every Kafka topic: used by `mdmpush topics create`, the tests and deploy/.

Retry tiers are topics with one fixed delay each, so every topic is FIFO by due time and a
consumer can pause a partition until its head is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 3600 * 1000

#: Default retry delays; the sender's settings may replace them.
DEFAULT_RETRY_DELAYS_MS: tuple[int, ...] = (10_000, 60_000, 600_000, 3_600_000)


#: Every compacted topic's compaction, the faust changelogs' too (services/fanout/app.py): a
#: segment rolls within the hour so the cleaner can compact it, and a tombstone is kept an hour
#: after that (Kafka's default is a day) — long enough for any reader restoring from the start,
#: which takes about a minute at 1,000,000 keys. Restores then read at most ~2 h of history,
#: not everything written since the last segment roll (the soak's restart-RSS steps).
COMPACTION: dict[str, str] = {
    "min.compaction.lag.ms": "0",
    "segment.ms": str(3600 * 1000),
    "delete.retention.ms": str(3600 * 1000),
}


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic: its name without prefix, value schema, partitions and retention."""

    name: str
    value_schema: str
    key: str
    partitions: int
    cleanup: Cleanup = Cleanup.DELETE
    retention_ms: int = 7 * DAY_MS

    def config(self) -> dict[str, str]:
        """Topic-level configs as the broker takes them."""
        conf = {"cleanup.policy": self.cleanup.value}
        if self.cleanup is Cleanup.DELETE:
            conf["retention.ms"] = str(self.retention_ms)
        else:
            conf.update(COMPACTION)
        return conf


REQUESTS = TopicSpec("mdm.notification.requests.v1", "NotificationRequest", "tenant", 6)
CHECKINS = TopicSpec("mdm.checkin.events.v1", "CheckinEvent", "enrollment id", 12)
REGISTRY = TopicSpec(
    "mdm.device.registry.v1", "DeviceRecord", "enrollment id", 12, Cleanup.COMPACT
)
JOBS_PRIORITY = TopicSpec("mdm.push.jobs.priority.v1", "PushJob", "certificate[#shard]", 12)
JOBS_BULK = TopicSpec("mdm.push.jobs.bulk.v1", "PushJob", "certificate[#shard]", 12)
DLQ = TopicSpec("mdm.push.dlq.v1", "PushJob", "certificate[#shard]", 3, retention_ms=30 * DAY_MS)
OUTCOMES = TopicSpec("mdm.push.outcomes.v1", "PushOutcome", "enrollment id", 12)
ALERTS = TopicSpec("mdm.push.alerts.v1", "UnansweredPush", "enrollment id", 6)
CONFIG = TopicSpec("mdm.push.config.v1", "PushPolicy", "certificate", 1, Cleanup.COMPACT)
#: Latest activity state per enrollment: the correlator writes it, the fan-out skips INACTIVE.
ACTIVITY = TopicSpec(
    "mdm.enrollment.activity.v1", "EnrollmentActivity", "enrollment id", 12, Cleanup.COMPACT
)
#: The DLQ records already replayed (services/dlq/ledger.py). Not in `all_topics()`: only the
#: operator's `mdmpush dlq replay` uses it, and creates it when missing.
DLQ_REPLAYED = TopicSpec(
    "mdm.push.dlq.replayed.v1", "DlqReplay (JSON)", "dlq topic/partition/offset", 1,
    Cleanup.COMPACT,
)


def retry_topic(delay_ms: int) -> TopicSpec:
    """The retry tier of one fixed delay, e.g. 10 s -> mdm.push.retry.10s.v1."""
    return TopicSpec(
        f"mdm.push.retry.{format_delay(delay_ms)}.v1",
        "PushJob",
        "certificate[#shard]",
        12,
        retention_ms=max(DAY_MS, 4 * delay_ms),
    )


def format_delay(delay_ms: int) -> str:
    """Shortest exact unit: 10000 -> '10s', 60000 -> '1m', 3600000 -> '1h', 250 -> '250ms'."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if delay_ms % size == 0:
            return f"{delay_ms // size}{unit}"
    return f"{delay_ms}ms"


def all_topics(retry_delays_ms: tuple[int, ...] = DEFAULT_RETRY_DELAYS_MS) -> list[TopicSpec]:
    """Every topic of the pipeline, retry tiers included."""
    fixed = [REQUESTS, CHECKINS, REGISTRY, JOBS_PRIORITY, JOBS_BULK, DLQ, OUTCOMES, ALERTS, CONFIG,
             ACTIVITY]
    return fixed + [retry_topic(d) for d in retry_delays_ms]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names with the deployment's prefix applied (tests use a unique prefix each)."""

    prefix: str = ""

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}{spec.name}"

    @property
    def requests(self) -> str:
        return self.name(REQUESTS)

    @property
    def checkins(self) -> str:
        return self.name(CHECKINS)

    @property
    def registry(self) -> str:
        return self.name(REGISTRY)

    @property
    def jobs_priority(self) -> str:
        return self.name(JOBS_PRIORITY)

    @property
    def jobs_bulk(self) -> str:
        return self.name(JOBS_BULK)

    @property
    def dlq(self) -> str:
        return self.name(DLQ)

    @property
    def outcomes(self) -> str:
        return self.name(OUTCOMES)

    @property
    def alerts(self) -> str:
        return self.name(ALERTS)

    @property
    def config(self) -> str:
        return self.name(CONFIG)

    @property
    def activity(self) -> str:
        return self.name(ACTIVITY)

    @property
    def dlq_replayed(self) -> str:
        return self.name(DLQ_REPLAYED)

    def retry(self, delay_ms: int) -> str:
        return self.name(retry_topic(delay_ms))
