"""10,000 devices enroll (every check-in on the real broker) and answer pushes."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections import Counter

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sim.apns.certs import make_pki
from services.sim.apns.fleet_port import AcceptedPush
from services.sim.apns.server import ApnsSimulator, SimulatorConfig
from services.sim.fleet import (
    Cause,
    KafkaCheckinSink,
    Reception,
    ScenarioSpec,
    SimDevice,
    build_scenario,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DEVICES = 10_000
#: A fleet where most devices are fine and every cause is present.
SHARES = {
    Cause.HEALTHY: 0.80, Cause.OFFLINE: 0.04, Cause.UNENROLLED_SILENT: 0.02,
    Cause.UNENROLLED_CHECKOUT: 0.02, Cause.WIPED: 0.02, Cause.WRONG_TOPIC: 0.02,
    Cause.RESTORED_TOKEN: 0.02, Cause.STALE_MAGIC: 0.04, Cause.ENROLLMENT_RACE: 0.02,
}
#: Pushes sent through the real simulator over TLS (the rest of the fleet is pushed too, but
#: handed to the gateway directly: httpx is the bottleneck there, not the fleet).
OVER_TLS = 1_000
#: How long to wait for the records at most: a fail-safe, not a bound (the test goes on as soon
#: as they are there; how fast the fleet is belongs to the benchmarks).
WAIT_S = 180.0


def count_checkins(
    settings: KafkaSettings, topic: str, expected: int, timeout: float
) -> Counter[str]:
    consumer = Consumer(settings.consumer_config("fleet-scale"), logger=client_logger("test"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    serde = AvroSerde()
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    try:
        while sum(seen.values()) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.2):
                if msg.error() is None:
                    seen[serde.decode_as(msg.value(), "CheckinEvent")["raw_message_type"]] += 1
    finally:
        consumer.close()
    return seen


async def push_over_tls(
    url: str, ctx: ssl.SSLContext, topic: str, devices: list[SimDevice]
) -> list[int]:
    async with httpx.AsyncClient(http2=True, verify=ctx, base_url=url, timeout=30) as client:
        sem = asyncio.Semaphore(100)

        async def one(d: SimDevice) -> int:
            e = d.stale_enrollment or d.enrollment  # the record the server pushes
            headers = {"apns-topic": topic, "apns-push-type": "mdm",
                       "apns-expiration": str(int(time.time()) + 3600)}
            async with sem:
                r = await client.post(f"/3/device/{e.token_hex}", json={"mdm": e.push_magic},
                                      headers=headers)
            return r.status_code

        return await asyncio.gather(*(one(d) for d in devices))


def accepted_push(token: str, magic: str, topic: str) -> AcceptedPush:
    """What the simulator hands its gateway after answering 200."""
    now = time.time()
    return AcceptedPush(
        apns_id=str(uuid.uuid4()), topic=topic, token_hex=token,
        payload=json.dumps({"mdm": magic}).encode(), priority=10, expiration=int(now) + 3600,
        push_type="mdm", received_at=now,
    )


def test_ten_thousand_devices_enroll_and_answer(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pki = make_pki(tmp_path_factory.mktemp("scale-pki"))
    cert = pki.issue()
    scenario = build_scenario(
        ScenarioSpec(DEVICES, {"acme": cert.topic}, SHARES, seed=5),
        Clock(speed=60),  # a check-in 500 simulated ms after its push: ~8 ms real
        KafkaCheckinSink(kafka_settings),
    )
    fleet = scenario.fleet
    records = DEVICES + len(scenario.by_cause(Cause.STALE_MAGIC))
    checkouts = len(scenario.by_cause(Cause.UNENROLLED_CHECKOUT))
    with ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki), fleet) as sim, fleet:
        fleet.attach(sim)
        scenario.enroll_all()
        seen = count_checkins(kafka_settings, topics.checkins, 2 * records + checkouts, WAIT_S)
        assert seen == {"Authenticate": records, "TokenUpdate": records, "CheckOut": checkouts}

        # Push every device's record as the server has it (the stale record for STALE_MAGIC).
        by_truth = {t.udid: t for t in scenario.truth}
        reachable = [d for d in scenario.devices if d.cause is not Cause.WRONG_TOPIC]
        codes = asyncio.run(push_over_tls(sim.url, pki.client_context(cert), cert.topic,
                                          reachable[:OVER_TLS]))
        assert set(codes) == {200}
        for d in reachable[OVER_TLS:]:
            e = d.stale_enrollment or d.enrollment
            assert by_truth[d.udid].enrollment_id == e.enrollment_id
            accepted = fleet.deliver(accepted_push(e.token_hex, e.push_magic, e.topic))
            assert accepted is (d.cause is not Cause.OFFLINE)
        answering = sum(1 for d in reachable if d.cause in (Cause.HEALTHY, Cause.ENROLLMENT_RACE))
        restored = len(scenario.by_cause(Cause.RESTORED_TOKEN))
        done = {"Idle": answering, "TokenUpdate": records + restored}
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and any(
            fleet.stats().checkins[kind] < n for kind, n in done.items()
        ):
            time.sleep(0.1)
        stats = fleet.stats()
    assert stats.checkins["Idle"] == answering, stats
    assert stats.receptions[Reception.ANSWERED.value] == answering
    stale = len(scenario.by_cause(Cause.STALE_MAGIC))
    assert stats.receptions[Reception.WRONG_MAGIC.value] == stale
    assert stats.refused_offline == len(scenario.by_cause(Cause.OFFLINE))
    assert stats.receptions[Reception.RESTORE_NOTICED.value] == restored
    assert stats.checkins["TokenUpdate"] == records + restored
