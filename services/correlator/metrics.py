"""The correlator's Prometheus metrics, in a registry of its own (tests run several in one
process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.correlator.diagnose import Diagnosis
from services.correlator.effects import Source

#: Seconds (simulated) between a deadline and its flagging: the timer tick plus loop lag.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60)


class CorrelatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        # Exported at 0 from the start, so the first alert or dead letter is an increase()
        # (a series born at 1 is not) and deploy/prometheus/alerts.yaml sees it.
        for diagnosis in Diagnosis:
            self.alerts.labels(diagnosis.value.lower())
        for source in Source:
            self.dlq.labels(source.value)
