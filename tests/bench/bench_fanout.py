"""Fan-out: registry build rate, target_all expansion rate, and single-request latency.

Run: MDMPUSH_TEST_BOOTSTRAP=127.0.0.1:9092 PYTHONPATH=. .venv/bin/python \
         tests/bench/bench_fanout.py [N]
Uses a fresh topic prefix (catalogue partition counts), a worker subprocess as deployed, and
reads Kafka high watermarks, so the measuring side costs the worker little. Prints
- the registry build rate: N check-ins published before the worker starts, DeviceRecords on
  the registry topic per second (with and without the worker's start-up);
- the expansion rate: one target_all request for N enrollments, jobs acknowledged per second
  from the request's publication to the last job on the topic;
- the latency of ~50 priority requests for one device each, one at a time: publication of the
  request to the job read from the priority jobs topic (p50/p99).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.kafka import make_producer
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from tests.fanout.harness import AT, T1, Publisher, Worker, checkin, request, token


def records_on(consumer: Consumer, topic: str) -> int:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in partitions
    )


def wait_for(consumer: Consumer, topic: str, count: int, timeout_s: float) -> float:
    """Seconds until `topic` holds `count` records (polling watermarks every 20 ms)."""
    start = time.monotonic()
    while records_on(consumer, topic) < count:
        if time.monotonic() - start > timeout_s:
            raise SystemExit(f"{topic}: {records_on(consumer, topic)}/{count} after {timeout_s}s")
        time.sleep(0.02)
    return time.monotonic() - start


def latencies(kafka: KafkaSettings, topics: Topics, count: int, fleet: int) -> list[float]:
    """Seconds from publishing a one-device USER request to reading its job, `count` times."""
    jobs = Consumer(kafka.consumer_config(f"bench-{uuid.uuid4().hex}",
                                          **{"fetch.wait.max.ms": 5}),
                    logger=client_logger("bench"))
    partitions = jobs.list_topics(topics.jobs_priority, timeout=10).topics[
        topics.jobs_priority].partitions
    jobs.assign([TopicPartition(topics.jobs_priority, p, OFFSET_END) for p in partitions])
    jobs.consume(timeout=1.0)  # let the assignment settle at the end of the topic
    pub = Publisher(kafka)
    # Connect and get a producer id first, as an MDM server's long-lived producer has: else the
    # first request waits ~0.5 s for it (that was the whole p99).
    pub.raw(topics.dlq, b"warm-up", "bench")
    found: list[float] = []
    try:
        for i in range(count):
            eid = f"bench-{i * 997 % fleet:06d}"
            start = time.monotonic()
            pub.record(topics.requests, "NotificationRequest",
                       request(f"lat-{i}", ids=[eid], initiator="USER"), "acme")
            while True:
                msg = jobs.poll(0.005)
                if msg is not None and msg.error() is None:
                    found.append(time.monotonic() - start)
                    break
                if time.monotonic() - start > 30:
                    raise SystemExit(f"request lat-{i}: no job after 30s")
    finally:
        jobs.close()
    return found


def main(n: int) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("MDMPUSH_TEST_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
    )
    create_topics(kafka, all_topics())
    topics = Topics(kafka.topic_prefix)
    serde = AvroSerde()
    producer = make_producer(kafka, **{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    for i in range(n):
        eid = f"bench-{i:06d}"
        event = checkin(eid, "TOKEN_UPDATE", AT, topic=T1, token_hex=token(eid),
                        push_magic=f"m{i}")
        producer.produce(topics.checkins, serde.encode("CheckinEvent", event), key=eid)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    watcher = Consumer(kafka.consumer_config(f"bench-{uuid.uuid4().hex}"),
                       logger=client_logger("bench"))
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(kafka, Path(tmp), MDMPUSH_FANOUT_PARTITIONS="12",
                        MDMPUSH_FANOUT_COMMIT_INTERVAL_S="2.8")
        worker.start()
        try:
            first_record = wait_for(watcher, topics.registry, 1, 120)
            built = first_record + wait_for(watcher, topics.registry, n, 600)
            print(f"registry: {n} check-ins applied in {built:.1f}s incl. worker start "
                  f"= {n / built:,.0f}/s; {n / (built - first_record):,.0f} check-ins/s "
                  f"after the first DeviceRecord")
            Publisher(kafka).record(topics.requests, "NotificationRequest",
                                    request("bench", initiator="ADMIN"), "acme")
            first = wait_for(watcher, topics.jobs_bulk, 1, 120)
            rest = wait_for(watcher, topics.jobs_bulk, n, 600)
            total = first + rest
            print(f"expansion: {n} jobs in {total:.2f}s from request = {n / total:,.0f} jobs/s "
                  f"(first job after {first * 1000:.0f} ms; {n / rest:,.0f} jobs/s after it)")
            lat = sorted(latencies(kafka, topics, 50, n))
            p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"latency: {len(lat)} one-device priority requests, request -> job "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
        finally:
            worker.stop()
            watcher.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
