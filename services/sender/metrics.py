"""The sender's Prometheus metrics, in a registry of its own (several senders may share a test
process).

The two series the loop touches per push are kept cheap: prometheus_client takes a lock per
increment (three per histogram observation), 4.4 us per push measured here, a few per cent of
the sender's CPU. So outcomes are counted in a plain dict and added to their counter at each
`flush` (the loop's housekeeping, every 0.1 s, and its shutdown), and the APNs latency is a
histogram of plain integers, read at each scrape (`LatencyHistogram`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from services.sender.apns.certificates import CertificateStore

#: Why the sender set a record aside: undecodable input, attempts exhausted, or Kafka refused one
#: of the job's records for good (service.py).
DLQ_CAUSES = ("undecodable", "exhausted", "refused")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)


class SenderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter(
            "mdmpush_sender_pushes", "Outcomes written, by state and APNs reason",
            ["state", "reason"], registry=r,
        )
        self.latency = LatencyHistogram(
            "mdmpush_sender_apns_latency_seconds", "Submit-to-answer time of APNs requests",
            LATENCY_BUCKETS,
        )
        r.register(self.latency)
        self.retries = Counter(
            "mdmpush_sender_retries", "Jobs sent to a retry tier, by tier", ["tier"], registry=r
        )
        self.dlq = Counter(
            "mdmpush_sender_dlq", "Records sent to the DLQ, by cause", ["cause"], registry=r
        )
        self.breaker_open = Gauge(
            "mdmpush_sender_breakers_open", "Certificates whose breaker is not closed", registry=r
        )
        self.throttle_waits = Counter(
            "mdmpush_sender_throttle_waits", "Times a lane's key had to wait for its bucket",
            ["lane"], registry=r,
        )
        self.in_flight = Gauge(
            "mdmpush_sender_in_flight", "APNs requests in flight", registry=r
        )
        self.buffered = Gauge(
            "mdmpush_sender_buffered", "Jobs consumed and waiting to be sent", registry=r
        )
        self.paused = Gauge(
            "mdmpush_sender_paused_partitions",
            "Partitions paused, by reason (buffer_full: back-pressure; retry_not_due: a retry "
            "tier's head is not due yet)", ["reason"], registry=r,
        )
        self.recovered = Counter(
            "mdmpush_sender_recovered_jobs",
            "Jobs a previous owner of the partition had finished past its commit: not re-sent",
            registry=r,
        )
        self.skipped_already_sent = Counter(
            "mdmpush_sender_skipped_already_sent",
            "Jobs past a taken-over partition's commit whose outcome its previous owner had "
            "written (read from the outcomes topic at assignment, already_sent.py): not re-sent",
            registry=r,
        )
        self.fenced = Counter(
            "mdmpush_sender_stall_fences",
            "Times the loop stalled for longer than the group may keep its partitions and held "
            "every push until the group confirmed it still owns them (or took them away)",
            registry=r,
        )
        # Exported at 0 from the start: a counter series born at 1 shows no increase(), and the
        # dead-letter alert (deploy/prometheus/alerts.yaml) would miss the first event.
        for cause in DLQ_CAUSES:
            self.dlq.labels(cause)
        #: Outcomes counted since the last `flush`, by (state, reason).
        self._pushes_unflushed: dict[tuple[str, str | None], int] = {}
        self._tier_children: dict[str, Counter] = {}

    def push(self, state: str, reason: str | None) -> None:
        """One outcome written (counted now, exported at the next `flush`)."""
        key = (state, reason)
        unflushed = self._pushes_unflushed
        unflushed[key] = unflushed.get(key, 0) + 1

    def flush(self) -> None:
        """Add the outcomes counted since the last call to their counter."""
        unflushed, self._pushes_unflushed = self._pushes_unflushed, {}
        for (state, reason), count in unflushed.items():
            self.pushes.labels(state, reason or "").inc(count)

    def retry(self, tier: str) -> None:
        child = self._tier_children.get(tier)
        if child is None:
            child = self._tier_children[tier] = self.retries.labels(tier)
        child.inc()


class LatencyHistogram(Collector):
    """A Prometheus histogram without labels whose `observe` is a bisect and two additions.

    Read at each scrape from another thread without a lock: the bucket counts are copied at
    once (one C call under the GIL), the sum may be one observation ahead or behind them, as
    prometheus_client's own histogram may be.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = buckets
        self._labels = [*(floatToGoString(b) for b in buckets), "+Inf"]
        #: Observations per bucket (not cumulative); the last one is above every bound.
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # the first bound >= value
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for label, count in zip(self._labels, counts, strict=True):
            cumulative += count
            buckets.append((label, float(cumulative)))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=buckets,
                                    sum_value=total)


class CertificateCollector(Collector):
    """The push certificates' gauges, read from the store at each scrape.

    Read, not set: a series per mounted topic exists from the first scrape, at its real value
    (refused 0, unreachable 0), and disappears with the certificate, without the loop keeping
    gauges in step with the directory. `enrollments` is absent until the census has read the
    registry (a 0 would claim the certificate serves nobody); `unreachable_enrollments` is NaN
    while a replacement is refused and the census has not counted yet.
    """

    def __init__(self, store: CertificateStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        states = self._store.states()
        counts = self._store.enrollment_counts()
        expiry = GaugeMetricFamily(
            "mdmpush_push_certificate_expiry_timestamp_seconds",
            "Not-after of the push certificate in use, Unix seconds", labels=["topic"])
        refused = GaugeMetricFamily(
            "mdmpush_push_certificate_replacement_refused",
            "1 while the mounted file holds a certificate of another topic (created instead of "
            "renewed): refused, the previous one stays in use", labels=["topic"])
        unreachable = GaugeMetricFamily(
            "mdmpush_push_certificate_unreachable_enrollments",
            "Enrollments of the topic the refused replacement would have made unreachable",
            labels=["topic"])
        enrollments = GaugeMetricFamily(
            "mdmpush_push_certificate_enrollments",
            "ENROLLED registry records under the certificate's topic (absent until counted)",
            labels=["topic"])
        for state in states:
            if state.in_use is not None:
                expiry.add_metric([state.topic], state.in_use.not_after.timestamp())
            refused.add_metric([state.topic], 0.0 if state.refused is None else 1.0)
            if state.refused is None:
                lost = 0.0
            elif counts is None:
                lost = math.nan
            else:
                lost = float(counts.get(state.topic, 0))
            unreachable.add_metric([state.topic], lost)
            if counts is not None:
                enrollments.add_metric([state.topic], float(counts.get(state.topic, 0)))
        yield from (expiry, refused, unreachable, enrollments)
