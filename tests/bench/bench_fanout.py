"""Fan-out throughput: a registry of 100,000 enrollments, one target_all request -> jobs/s.

Run: MDMPUSH_TEST_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/bench_fanout.py [N]
Uses a fresh topic prefix (catalogue partition counts), a worker subprocess as deployed, and
reads only Kafka high watermarks, so the measuring side costs the worker nothing. Prints the
registry build rate (check-ins applied/s) and the expansion rate (jobs acknowledged/s, from the
request's publication to the last job on the topic).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.kafka import make_producer
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
    watcher = Consumer(kafka.consumer_config(f"bench-{uuid.uuid4().hex}"))
    with tempfile.TemporaryDirectory() as tmp:
        worker = Worker(kafka, Path(tmp), MDMPUSH_FANOUT_PARTITIONS="12",
                        MDMPUSH_FANOUT_COMMIT_INTERVAL_S="2.8")
        worker.start()
        try:
            built = wait_for(watcher, topics.registry, n, 600)
            print(f"registry: {n} enrollments applied in {built:.1f}s "
                  f"(incl. worker start) = {n / built:,.0f} check-ins/s")
            Publisher(kafka).record(topics.requests, "NotificationRequest",
                                    request("bench", initiator="ADMIN"), "acme")
            first = wait_for(watcher, topics.jobs_bulk, 1, 120)
            rest = wait_for(watcher, topics.jobs_bulk, n, 600)
            total = first + rest
            print(f"expansion: {n} jobs in {total:.2f}s from request = {n / total:,.0f} jobs/s "
                  f"(first job after {first * 1000:.0f} ms; {n / rest:,.0f} jobs/s after it)")
        finally:
            worker.stop()
            watcher.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
