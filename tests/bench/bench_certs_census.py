"""What counting enrollments per certificate costs a sender: the census (enrollment_census.py)
reads a registry topic of N DeviceRecords to its end and counts, against a peer in the same run
that reads the same records without decoding them (the Kafka part alone).

    MDMPUSH_TEST_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python -m tests.bench.bench_certs_census [N]

Prints records/s of both and their ratio (absolute rates mean little on a shared machine).
"""

from __future__ import annotations

import sys
import time

from confluent_kafka.admin import AdminClient

from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sender.enrollment_census import EnrollmentCensus, registry_view
from tests.support.bench_env import fresh_kafka

TOPICS = [f"com.apple.mgmt.External.bench-{i}" for i in range(4)]


def main(count: int) -> None:
    kafka, topics = fresh_kafka()
    try:
        run(kafka, topics, count)
    finally:  # a shared broker: leave no partitions behind
        admin = AdminClient(kafka.admin_config())
        mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(kafka.topic_prefix)]
        for future in admin.delete_topics(mine, operation_timeout=30).values():
            future.exception(30)


def run(kafka: KafkaSettings, topics: Topics, count: int) -> None:
    serde = AvroSerde()
    producer = ReliableProducer(kafka, name="bench-registry", **{"linger.ms": 50})
    now = int(time.time() * 1000)
    for n in range(count):
        eid = f"E{n:08d}"
        record = {"enrollment_id": eid, "tenant": "acme", "udid": eid,
                  "state": "ENROLLED" if n % 10 else "CHECKED_OUT",
                  "topic": TOPICS[n % len(TOPICS)], "token_hex": f"{n:064x}",
                  "push_magic": f"magic-{n}", "enrolled_at": now, "token_updated_at": now,
                  "last_contact_at": now, "token_dead_since": None, "updated_at": now}
        producer.produce(topics.registry, serde.encode("DeviceRecord", record, topics.registry),
                         key=eid)
        if n % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    producer.close()

    started = time.perf_counter()
    raw = sum(1 for _ in read_to_end(kafka, topics.registry, timeout_s=120, name="bench-peer"))
    peer_s = time.perf_counter() - started

    census = EnrollmentCensus(registry_view(kafka, topics.registry, serde), interval_s=0.05)
    started = time.perf_counter()
    census.start()
    while census.counts() is None:
        time.sleep(0.01)
    census_s = time.perf_counter() - started
    counts = census.counts() or {}
    census.close()
    assert raw == count and sum(counts.values()) == count - count // 10, (raw, counts)
    print(f"{count:,} DeviceRecords: census to first count {census_s:.2f} s "
          f"({count / census_s:,.0f}/s); peer read without decoding {peer_s:.2f} s "
          f"({count / peer_s:,.0f}/s); census/peer time {census_s / peer_s:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
