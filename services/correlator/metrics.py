"""The correlator's Prometheus metrics, in a registry of its own (tests run several in one
process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.correlator.diagnose import Diagnosis
from services.correlator.effects import RepushCause, Source

#: Seconds (simulated) between a deadline and its flagging: the timer tick plus loop lag.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60)


class CorrelatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: What catch_up() has counted so far, per counter.
        self._totals: dict[int, int] = {}
        r = self.registry
        self.verdicts = Counter(
            "mdmpush_correlator_verdicts", "Verdicts written, by state and diagnosis",
            ["state", "diagnosis"], registry=r,
        )
        self.repushes = Counter(
            "mdmpush_correlator_repushes", "Re-push jobs produced, by cause", ["cause"],
            registry=r,
        )
        self.alerts = Counter(
            "mdmpush_correlator_alerts", "UnansweredPush alerts, by diagnosis", ["diagnosis"],
            registry=r,
        )
        self.pending = Gauge(
            "mdmpush_correlator_pending", "Pushes waiting for contact or a scheduled send",
            registry=r,
        )
        self.lateness = Histogram(
            "mdmpush_correlator_flag_lateness_seconds",
            "Time from a push's deadline to its UNANSWERED verdict",
            buckets=LATENESS_BUCKETS, registry=r,
        )
        self.dlq = Counter(
            "mdmpush_correlator_dlq", "Poison records sent to the DLQ, by source", ["source"],
            registry=r,
        )
        self.answer_latency = Histogram(
            "mdmpush_correlator_answer_latency_seconds", "Push-to-contact time of answered pushes",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r,
        )
        self.rearms = Counter(
            "mdmpush_correlator_rearm_pushes", "Re-arm pushes sent to enrollments silent longer "
            "than rearm_after (bulk lane)", registry=r,
        )
        self.rearm_answered = Counter(
            "mdmpush_correlator_rearm_answered", "Enrollments that contacted the server after "
            "their re-arm push", registry=r,
        )
        self.inactive = Gauge(
            "mdmpush_correlator_inactive_enrollments", "Enrollments marked INACTIVE (silent "
            "longer than inactive_after) among this instance's own (sum across instances)",
            registry=r,
        )
        self.foreign_checkins = Counter(
            "mdmpush_correlator_foreign_checkins", "Check-ins refused because they name another "
            "tenant than the enrollment's owner", registry=r,
        )
        self.refused_enrollments = Counter(
            "mdmpush_correlator_refused_enrollments", "Check-ins of new enrollments refused "
            "because the book holds max_enrollments rows", registry=r,
        )
        self.enrollments = Gauge(
            "mdmpush_correlator_enrollments", "Enrollment rows held (bounded by max_enrollments)",
            registry=r,
        )
        # Exported at 0 from the start, so the first alert or dead letter is an increase()
        # (a series born at 1 is not) and deploy/prometheus/alerts.yaml sees it.
        for diagnosis in Diagnosis:
            self.alerts.labels(diagnosis.value.lower())
        for source in Source:
            self.dlq.labels(source.value)
        for cause in RepushCause:
            self.repushes.labels(cause.value)

    def restart_totals(self) -> None:
        """A new core counts from 0 again (a new session after a Kafka outage)."""
        self._totals.clear()

    def catch_up(self, counter: Counter, total: int) -> None:
        """Raise `counter` to the core's running `total` (the core counts; it has no metrics)."""
        gap = total - self._totals.get(id(counter), 0)
        if gap > 0:
            counter.inc(gap)
            self._totals[id(counter)] = total
