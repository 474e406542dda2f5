"""The sender wired to the real world: librdkafka for Kafka, HTTP/2 clients for APNs.

`Sender` (service.py) is the loop and its rules; this module only builds what it talks to, from
settings. The librdkafka keys below are the sender's defaults; an operator changes any of them
with `MDMPUSH_KAFKA_CONSUMER_OVERRIDES` / `MDMPUSH_KAFKA_PRODUCER_OVERRIDES` (JSON), applied last.
"""

from __future__ import annotations

from typing import Any

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.io import ConfluentKafkaIO
from services.common.ops_server import Heartbeat
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde, serde_for
from services.common.settings import MIN_SESSION_TIMEOUT_MS, KafkaSettings
from services.sender.already_sent import OutcomeSources
from services.sender.apns.pool import CertificateStore, ClientPool
from services.sender.backlog import STATS_INTERVAL_MS, Backlog
from services.sender.enrollment_census import EnrollmentCensus, registry_view
from services.sender.metrics import CertificateCollector
from services.sender.policy import LiveSenders, PolicyBook, policy_view
from services.sender.service import Sender
from services.sender.settings import SenderSettings

#: Prefetch little: back-pressure pauses partitions and librdkafka drops their prefetch, so a
#: large prefetch would only be fetched twice. The threshold applies to the one queue all
#: partitions share: above it, no partition is fetched, the priority one neither ("Fetch
#: backoff: Queue full"). A fetch may bring a whole producer batch (~3,500 bulk jobs measured)
#: at once, so the loop takes everything queued in one `consume` (consume_batch) and a priority
#: record waits one fetch, not a backlog.
CONSUMER_DEFAULTS: dict[str, Any] = {
    # One sender owns partition p of every job topic: a key's whole traffic, so its local
    # buckets are the farm-wide throttle.
    "partition.assignment.strategy": "range",
    "queued.min.messages": 1000,
    "queued.max.messages.kbytes": 2048,
    # librdkafka waits this long to fetch again once the prefetch queue is full (1 s by
    # default): at 10,000 pushes/s that starves the loop.
    "fetch.queue.backoff.ms": 5,
    # One fetch brings at most this much per partition: a priority record arriving behind a bulk
    # fetch waits for that fetch to be routed, no more.
    "max.partition.fetch.bytes": 65536,
    # A resumed retry partition waits for the fetch in progress: keep it short.
    "fetch.wait.max.ms": 25,
}


def build_sender(
    settings: SenderSettings,
    kafka: KafkaSettings,
    *,
    clock: Clock | None = None,
    serde: AvroSerde | None = None,
    heartbeat: Heartbeat | None = None,
) -> Sender:
    """A sender on the broker of `kafka`, pushing to the endpoint of `settings`."""
    topics = Topics(kafka.topic_prefix)
    serde = serde or serde_for(kafka)
    consumer_defaults = {**CONSUMER_DEFAULTS,
                         "client.id": f"{kafka.client_id}-sender-{settings.instance_id}"}
    backlog = None
    if settings.skip_already_sent and settings.unrecorded_min and settings.unrecorded_share:
        # The unrecorded window's share is of the jobs outstanding, from the statistics.
        backlog = Backlog()
        consumer_defaults.update({"statistics.interval.ms": STATS_INTERVAL_MS,
                                  "stats_cb": backlog.update})
    io = ConfluentKafkaIO(kafka, group_id=settings.group_id, name="sender",
                          consumer_defaults=consumer_defaults)
    census = (EnrollmentCensus(registry_view(kafka, topics.registry, serde),
                               settings.enrollment_count_s)
              if settings.enrollment_count_s else None)
    store = CertificateStore(settings.cert_dir, census)
    pool = ClientPool(
        store,
        settings.endpoint(),
        transport=settings.transport,
        ca_path=settings.ca_path,
        max_concurrent_streams=settings.max_concurrent_streams,
        request_timeout_s=settings.request_timeout_s,
        idle_timeout_s=settings.idle_close_s,
        reload_s=settings.cert_reload_s,
    )
    fallback = PushPolicy(
        priority_per_minute=settings.default_priority_per_minute,
        bulk_per_minute=settings.default_bulk_per_minute,
        max_attempts=settings.default_max_attempts,
    )
    sender = Sender(
        settings, io, pool,
        topics=topics,
        serde=serde,
        policies=PolicyBook(fallback, policy_view(kafka, topics.config, serde)),
        dead_letters=DeadLetterWriter(io.producer, topics.dlq, service="sender",
                                      limit=DlqLimit.from_settings(kafka)),
        live=LiveSenders(kafka, settings.group_id, settings.members_refresh_s),
        clock=clock,
        heartbeat=heartbeat,
        already_sent=(OutcomeSources(kafka, topics.outcomes)
                      if settings.skip_already_sent else None),
        stall_fence_s=stall_fence_s(kafka),
        outstanding=backlog,
    )
    sender.metrics.registry.register(CertificateCollector(store))
    return sender


def stall_fence_s(kafka: KafkaSettings) -> float:
    """A stall of the loop longer than this may have cost the group membership: half the
    session timeout, since the last heartbeat may have gone out up to a heartbeat interval
    (a third of it by default) before the stall began."""
    return max(kafka.session_timeout_ms, MIN_SESSION_TIMEOUT_MS) / 2000
