"""`mdmpush demo`: start the embedded default stack and show a request travelling through Kafka."""

from __future__ import annotations

import argparse
import time
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from services.sdk.publisher import PushPublisher, PushRequest


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the local demo on the embedded stack")
    p.add_argument("--keep", action="store_true", help="leave Kafka running afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kafka = LocalKafka()
    t0 = time.monotonic()
    status = kafka.up()
    print(f"[demo] Kafka 2.3.0 ready at {status.bootstrap} in {time.monotonic() - t0:.1f}s")
    settings = KafkaSettings(bootstrap_servers=status.bootstrap)
    created = create_topics(settings, all_topics())
    print(f"[demo] topics: {len(created)} created, {len(all_topics()) - len(created)} existing")
    try:
        round_trip(settings)
    finally:
        if not args.keep:
            kafka.down()
            print("[demo] Kafka stopped (use --keep to leave it running)")
    return 0


def round_trip(settings: KafkaSettings) -> None:
    """Publish one NotificationRequest and read it back from its topic."""
    topic = Topics(settings.topic_prefix).requests
    publisher = PushPublisher(settings)
    request = PushRequest(tenant="demo-tenant", enrollment_ids=["DEMO-UDID-1", "DEMO-UDID-2"],
                          initiator="user", command_type="apply_policies", source="cli")
    request_id = publisher.publish(request)
    print(f"[demo] published NotificationRequest {request_id} to {topic}")
    consumer = Consumer(settings.consumer_config(f"mdmpush-demo-{request_id}"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        serde = AvroSerde()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value() or b""
            record = serde.decode_as(value, "NotificationRequest")
            if record["request_id"] == request_id:
                print(f"[demo] consumed it back from partition {msg.partition()} offset "
                      f"{msg.offset()} ({len(value)} bytes, wire header {value[:10].hex()}):")
                print(f"       {record}")
                return
        raise SystemExit("[demo] the request did not come back within 20 s")
    finally:
        consumer.close()
