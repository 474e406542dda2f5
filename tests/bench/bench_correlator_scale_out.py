"""Correlator scale-out: what one replica holds alone, what each of two holds, and the takeover.

Run: `.venv/bin/python tests/bench/bench_correlator_scale_out.py [enrollments]` (default 20,000;
broker: MDMPUSH_TEST_BOOTSTRAP, default 127.0.0.1:9092). On the real broker, under a throw-away
topic prefix with the catalogue's 12 partitions, every enrollment gets a TokenUpdate and one SENT
push that nobody answers (deadline 1 h: nothing is judged while measuring). Then:
1. one replica alone: its enrollments and pending gauges, resident memory (VmRSS) and the time
   from its start to holding every push (the peer figure);
2. a second replica joins: each one's share of the enrollments and pushes (bar: 0.4-0.6 each,
   none held twice), and its resident memory;
3. SIGKILL one: time until the survivor holds every enrollment and push again.
Prints ratios against the one-replica run of the same invocation (absolute times depend on the
machine's load).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.clock import Clock
from services.common.kafka.producer import ReliableProducer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from tests.correlator.harness import TOPIC_A, Replica, token_of

SETTINGS = {"deadline_ms": 3_600_000, "race_window_ms": 3_600_000, "repush_silent": False,
            "rearm_after_ms": 0, "inactive_after_ms": 0}


def rss_mb(replica: Replica) -> float:
    assert replica.proc.proc is not None
    for line in Path(f"/proc/{replica.proc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if predicate():
                return time.monotonic() - started
        except OSError:
            pass  # the metrics port is not up yet
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def feed(kafka: KafkaSettings, topics: Topics, clock: Clock, n: int) -> None:
    serde = AvroSerde()
    producer = ReliableProducer(kafka, name="bench-feed", **{"linger.ms": 20})
    now = clock.now_ms()
    for i in range(n):
        e = f"{uuid.UUID(int=i + 1)}".upper()
        producer.produce(topics.checkins, serde.encode("CheckinEvent", {
            "event_id": f"ev-{i}", "enrollment_id": e, "tenant": "acme",
            "message_type": "TOKEN_UPDATE", "raw_message_type": "TokenUpdate", "udid": e,
            "topic": TOPIC_A, "token_hex": token_of(e), "push_magic": f"m-{i}",
            "command_uuid": None, "status": None, "occurred_at": now - 60_000,
            "source": "bench"}), key=e)
        producer.produce(topics.outcomes, serde.encode("PushOutcome", {
            "job_id": f"req-1/{e}", "request_id": "req-1", "tenant": "acme",
            "enrollment_id": e, "state": "SENT", "lane": "BULK", "attempt": 0, "repush": 0,
            "topic": TOPIC_A, "token_hex": token_of(e), "push_magic": f"m-{i}",
            "token_updated_at": now - 60_000, "apns_id": None, "status": 200, "reason": None,
            "apns_timestamp": None, "latency_ms": 1.0, "at": now, "rides_on": None}), key=e)
    producer.close(120)


def held(replica: Replica) -> tuple[int, int]:
    g = replica.gauges()
    return int(g["mdmpush_correlator_enrollments"]), int(g["mdmpush_correlator_pending"])


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    bootstrap = os.environ.get("MDMPUSH_TEST_BOOTSTRAP", "127.0.0.1:9092")
    kafka = KafkaSettings(bootstrap_servers=bootstrap,
                          topic_prefix=f"bench{uuid.uuid4().hex[:8]}.", linger_ms=1)
    create_topics(kafka, all_topics())
    topics, clock = Topics(kafka.topic_prefix), Clock()
    feed(kafka, topics, clock, n)
    print(f"{n:,} enrollments, one pending push each, 12 partitions")

    a = Replica(kafka, clock, "bench-a", **SETTINGS)
    b = Replica(kafka, clock, "bench-b", **SETTINGS)
    try:
        a.proc.start()
        alone_s = wait(lambda: held(a) == (n, n), 300, "replica a to hold everything")
        alone_rss = rss_mb(a)
        print(f"one replica: holds {n:,} enrollments / {n:,} pushes, ready with all in "
              f"{alone_s:.1f} s, RSS {alone_rss:.0f} MB")

        b.proc.start()
        both_s = wait(lambda: a.ready() and b.ready() and held(a)[1] + held(b)[1] == n
                      and held(a)[0] + held(b)[0] == n and held(a)[1] < n, 300,
                      "the two replicas to share the partitions")
        shares = {name: held(r) for name, r in (("a", a), ("b", b))}
        rss = {name: rss_mb(r) for name, r in (("a", a), ("b", b))}
        met = all(0.4 <= e / n <= 0.6 for e, _ in shares.values())
        for name, (e, p) in shares.items():
            replica = a if name == "a" else b
            print(f"replica {name}: partitions {sorted(replica.partitions())}, holds {e:,} "
                  f"enrollments ({e / n:.2f}) / {p:,} pushes ({p / n:.2f}), RSS "
                  f"{rss[name]:.0f} MB ({rss[name] / alone_rss:.2f}x the lone replica)")
        print(f"shared after b joined in {both_s:.1f} s; none held twice "
              f"({sum(e for e, _ in shares.values()):,} = {n:,}); bar 0.4-0.6 each: "
              f"{'MET' if met else 'MISSED'}")

        b.proc.kill()
        takeover_s = wait(lambda: held(a) == (n, n) and a.ready(), 300,
                          "the survivor to hold everything")
        print(f"SIGKILL of b: a holds all {n:,} again {takeover_s:.1f} s later (session timeout "
              f"{KafkaSettings().session_timeout_ms / 1000:.0f} s included); "
              f"{takeover_s / alone_s:.2f}x a lone start")
        return 0 if met else 1
    finally:
        a.proc.stop()
        b.proc.stop()


if __name__ == "__main__":
    sys.exit(main())
