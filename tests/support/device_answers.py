"""Devices that answer their pushes, for fleet-scale benchmarks: a process of its own that reads
the outcomes topic and, for every SENT push, writes the check-in the device would send
(a command report, status Idle) `--delay-s` after the push was answered by APNs.

The fleet simulator (services/sim/fleet) models a device fully, but one Python object per
device and an HTTP check-in each does not reach a million; here a device is the one record the
correlator and the fan-out need to hear from it. An answer can only follow the sender's SENT
outcome, i.e. APNs' 200 for that push, so no device answers a push it did not get.

    python -m tests.support.device_answers [--delay-s S]   (Kafka settings from MDMPUSH_KAFKA_*;
    the delay's default from BENCH_ANSWER_DELAY_S, for ServiceProcess, which passes no arguments)

Stops on SIGTERM; exits 1 if Kafka refused an answer (a lost answer would read as a device that
never answered).
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import threading
import time
from pathlib import Path

# Run as a module from the repository root or as a script: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Consumer

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import DecodeError
from services.common.kafka import make_producer
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings

#: The answer delay when started without arguments (ServiceProcess passes none).
DELAY_ENV = "BENCH_ANSWER_DELAY_S"


def run(kafka: KafkaSettings, delay_s: float, stop: threading.Event) -> int:
    """Answer every SENT outcome until `stop`; returns how many answers were written."""
    topics = Topics(kafka.topic_prefix)
    serde, clock = AvroSerde(), Clock.from_settings()
    consumer = Consumer(kafka.consumer_config(f"{kafka.topic_prefix}devices",
                                              **{"enable.auto.offset.store": True}),
                        logger=client_logger("devices"))
    consumer.subscribe([topics.outcomes])
    producer = make_producer(kafka)
    refused: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            refused.append(str(err))

    due: collections.deque[tuple[float, str, str]] = collections.deque()
    written = 0
    try:
        while not stop.is_set() and not refused:
            for msg in consumer.consume(1000, 0.1):
                if msg.error() is not None:
                    continue
                try:
                    outcome = serde.decode_as(msg.value(), "PushOutcome")
                except DecodeError:
                    continue  # not a push this fleet can answer
                if outcome["state"] == "SENT":
                    due.append((time.monotonic() + delay_s, outcome["enrollment_id"],
                                outcome["tenant"]))
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, enrollment_id, tenant = due.popleft()
                record = {
                    "event_id": f"answer-{enrollment_id}-{written}",
                    "enrollment_id": enrollment_id, "tenant": tenant,
                    "message_type": "COMMAND_REPORT", "raw_message_type": "Idle",
                    "udid": enrollment_id, "status": "Idle", "occurred_at": clock.now_ms(),
                    "source": "bench-devices"}
                value = serde.encode("CheckinEvent", record, topics.checkins)
                while True:
                    try:
                        producer.produce(topics.checkins, value, key=enrollment_id,
                                         on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.05)
                written += 1
            producer.poll(0)
    finally:
        consumer.close()
        if producer.flush(60) or refused:
            print(f"answers refused by Kafka: {refused[:3]}", file=sys.stderr)
            written = -1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-s", type=float,
                        default=float(os.environ.get(DELAY_ENV, "0")),
                        help="seconds between APNs' answer and the device's check-in")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    written = run(KafkaSettings(), args.delay_s, stop)
    print(f"answers written: {written}", file=sys.stderr)
    sys.exit(0 if written >= 0 else 1)


if __name__ == "__main__":
    main()
