"""End to end: one request for N devices (default 100,000) through Kafka, the fan-out and the
sender until the APNs simulator has answered every push; beside it, in the same run, the sender
alone (the same N jobs pre-produced to Kafka) against the same kind of simulator.

Run: .venv/bin/python -m tests.bench.bench_e2e [N]
Bars: end to end <= 30 s for 100,000 devices, and >= 0.8x the sender alone's rate.
"""

from __future__ import annotations

import bisect
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.common.clock import Clock
from services.common.kafka import make_producer
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.pipeline import Pipeline, PipelineSpec
from services.devstack.procs import wait_for
from services.sdk.publisher import PushPublisher, PushRequest
from services.sim.apns.certs import mdm_topic
from tests.bench.bench_sender import cpu_seconds
from tests.support.bench_env import bench_kafka


def _token(i: int) -> str:
    return f"{i:064x}"


def _produce(kafka: KafkaSettings, topic: str, schema: str,
             records: list[tuple[str, dict[str, object]]]) -> None:
    producer = make_producer(kafka)
    serde = AvroSerde()
    for key, record in records:
        while True:
            try:
                producer.produce(topic, serde.encode(schema, record), key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)


def _wait_accepted(pipeline: Pipeline, n: int, timeout_s: float) -> float:
    assert pipeline.sim is not None
    t0 = time.monotonic()
    if not wait_for(lambda: pipeline.sim is not None and pipeline.sim.snapshot().accepted >= n,
                    timeout_s, interval_s=0.02):
        raise SystemExit(f"only {pipeline.sim.snapshot().accepted}/{n} pushes answered\n"
                         + pipeline.logs())
    return time.monotonic() - t0


def sender_alone(n: int, topic: str) -> float:
    """Seconds for one sender to push n pre-produced jobs (Kafka in, outcomes out)."""
    kafka = bench_kafka("sender-alone")
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp, Pipeline(
        kafka, Clock(), Path(tmp), PipelineSpec([topic], fanout=False, correlator=False)
    ) as pipeline:
        jobs = [(topic, {"job_id": f"r/{i}", "request_id": "r", "tenant": "t",
                         "enrollment_id": f"E{i}", "lane": "BULK", "kind": "MDM",
                         "topic": topic, "token_hex": _token(i), "push_magic": f"m{i}",
                         "created_at": now}) for i in range(n)]
        time.sleep(3)  # the sender joins its group before the clock starts
        t0 = time.monotonic()
        _produce(kafka, pipeline.topics.jobs_bulk, "PushJob", jobs)
        produced = time.monotonic() - t0
        took = produced + _wait_accepted(pipeline, n, 300)
    return took


def end_to_end(n: int, topic: str) -> tuple[float, float]:
    """(seconds to build the registry, seconds from request to the last push answered)."""
    kafka = bench_kafka("e2e")
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp, Pipeline(
        kafka, Clock(), Path(tmp), PipelineSpec([topic], correlator=False)
    ) as pipeline:
        checkins = [(f"E{i}", {"event_id": f"ev{i}", "enrollment_id": f"E{i}", "tenant": "acme",
                               "message_type": "TOKEN_UPDATE", "udid": f"E{i}", "topic": topic,
                               "token_hex": _token(i), "push_magic": f"m{i}",
                               "occurred_at": now}) for i in range(n)]
        t0 = time.monotonic()
        _produce(kafka, pipeline.topics.checkins, "CheckinEvent", checkins)
        if not pipeline.wait_registry([f"E{i}" for i in range(n)], timeout_s=900):
            raise SystemExit("registry incomplete\n" + pipeline.logs())
        registry_s = time.monotonic() - t0
        procs = {"fan-out": pipeline.fanout, "sender": pipeline.senders[0]}
        cpu_before = {name: cpu_seconds(p.pid) for name, p in procs.items() if p and p.pid}
        t1 = time.monotonic()
        published_ms = time.time() * 1000
        PushPublisher(kafka).publish(PushRequest(tenant="acme", target_all=True))
        took = (time.monotonic() - t1) + _wait_accepted(pipeline, n, 300)
        cpu = {name: cpu_seconds(p.pid) - cpu_before[name]
               for name, p in procs.items() if p and p.pid}
        jobs = _stamps(kafka, pipeline.topics.jobs_bulk)
        outcomes = _stamps(kafka, pipeline.topics.outcomes)
        def rel(stamp_ms: float) -> str:
            return f"+{(stamp_ms - published_ms) / 1000:.1f} s"

        during = bisect.bisect_right(outcomes, jobs[-1])
        after_s = max(0.001, (outcomes[-1] - jobs[-1]) / 1000)
        print(f"  where the time went: fan-out wrote jobs from {rel(jobs[0])} to {rel(jobs[-1])};"
              f" the sender's outcomes from {rel(outcomes[0])} to {rel(outcomes[-1])} "
              f"({during:,} while the fan-out ran, then {(len(outcomes) - during) / after_s:,.0f}"
              f" pushes/s); CPU used meanwhile: "
              + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in cpu.items()))
        return registry_s, took


def _stamps(kafka: KafkaSettings, topic: str) -> list[int]:
    """Sorted record timestamps (ms) of a whole topic, without decoding."""
    consumer = Consumer(kafka.consumer_config(f"stamps-{time.time_ns()}",
                                              **{"enable.auto.commit": False}),
                        logger=client_logger("bench"))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        stamps: list[int] = []
        deadline = time.monotonic() + 60
        while len(stamps) < sum(ends.values()) and time.monotonic() < deadline:
            stamps.extend(m.timestamp()[1] for m in consumer.consume(10_000, 0.5)
                          if m.error() is None)
        return sorted(stamps)
    finally:
        consumer.close()


def main(n: int) -> None:
    topic = mdm_topic()
    alone = sender_alone(n, topic)
    registry_s, e2e = end_to_end(n, topic)
    print(f"sender alone: {n} jobs in {alone:.1f} s = {n / alone:,.0f} pushes/s")
    print(f"end to end:   {n} devices in {e2e:.1f} s = {n / e2e:,.0f} pushes/s "
          f"(registry of {n} built beforehand in {registry_s:.1f} s)")
    print(f"ratio end-to-end / sender alone: {alone / e2e:.2f} (bar >= 0.8); "
          f"end-to-end time {e2e:.1f} s (bar <= 30 s for 100,000)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
