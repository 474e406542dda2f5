"""Every cause of the Apple seed, end to end: httpx pushes over TLS to the real APNs simulator,
the fleet as its device gateway, check-ins read back from the real broker.

Where simulated time matters (the enrollment race, an offline schedule, the 25-hour
self-healing) the fleet runs on a :class:`ManualClock` that the test moves: the outcome follows
from the order of events, not from how fast a loaded machine happens to be. Waits on the broker
have generous timeouts (a fail-safe, returned from as soon as the records are there); no test
asserts how long anything took."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sim.apns.certs import PushCertFiles, SimPki, make_pki
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread
from services.sim.fleet import (
    Cause,
    FleetParams,
    KafkaCheckinSink,
    Reception,
    Scenario,
    ScenarioSpec,
    SimDevice,
    build_scenario,
)
from tests.support.manual_clock import ManualClock

pytestmark = pytest.mark.kafka

TENANT = "acme"


class CheckinLog:
    """Everything on the check-in topic, read from the beginning without a consumer group."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self._consumer = Consumer(settings.consumer_config("fleet-test"),
                                  logger=client_logger("test"))
        meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        )
        self._serde = AvroSerde()
        self.events: list[dict[str, Any]] = []

    def _drain(self, timeout: float) -> None:
        for msg in self._consumer.consume(1000, timeout):
            if msg.error() is None:
                self.events.append(self._serde.decode_as(msg.value(), "CheckinEvent"))

    def until(
        self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not pred(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met in {timeout}s; events: {self.events}")
            self._drain(0.1)
        return self.events

    def settle(self, seconds: float) -> list[dict[str, Any]]:
        """Read for ``seconds`` more (to show that something did *not* happen)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._drain(0.1)
        return self.events

    def of(self, enrollment_id: str, raw_type: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.events
            if e["enrollment_id"] == enrollment_id
            and (raw_type is None or e["raw_message_type"] == raw_type)
        ]

    def close(self) -> None:
        self._consumer.close()


def idles(log: CheckinLog, enrollment_id: str) -> int:
    return len(log.of(enrollment_id, "Idle"))


@dataclass
class Rig:
    """A scenario attached to a running simulator, with a client for the tenant's certificate."""

    scenario: Scenario
    sim: SimulatorThread
    log: CheckinLog
    pki: SimPki
    cert: PushCertFiles
    _clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, cert: PushCertFiles) -> httpx.Client:
        if cert.topic not in self._clients:
            self._clients[cert.topic] = httpx.Client(
                http2=True, verify=self.pki.client_context(cert), base_url=self.sim.url, timeout=10
            )
        return self._clients[cert.topic]

    def device(self, cause: Cause) -> SimDevice:
        return self.scenario.by_cause(cause)[0]

    def advance(self, ms: int) -> None:
        """Move the fleet's :class:`ManualClock` on and wait until what that made due ran."""
        clock = self.scenario.fleet.clock
        assert isinstance(clock, ManualClock)
        clock.advance(ms)
        self.sync()

    def sync(self) -> None:
        """Wait until the fleet has handled every push the simulator handed it so far."""
        self.scenario.fleet.scheduler.wait_idle()

    def push(
        self,
        token: str,
        magic: str,
        cert: PushCertFiles | None = None,
        expires_in_s: int = 3600,
    ) -> httpx.Response:
        """An MDM wake-up as the sender sends it."""
        cert = cert or self.cert
        headers = {
            "apns-topic": cert.topic,
            "apns-push-type": "mdm",
            "apns-priority": "10",
            "apns-expiration": str(int(time.time()) + expires_in_s),
        }
        return self.client(cert).post(f"/3/device/{token}", json={"mdm": magic}, headers=headers)

    def push_to(self, device: SimDevice) -> httpx.Response:
        """Push with the trifecta the server has for the device's current enrollment."""
        e = device.enrollment
        return self.push(e.token_hex, e.push_magic)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()


RigFactory = Callable[..., Rig]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return make_pki(tmp_path_factory.mktemp("fleet-pki"))


@pytest.fixture(scope="module")
def cert(pki: SimPki) -> PushCertFiles:
    return pki.issue()


@pytest.fixture
def make_rig(
    kafka_settings: KafkaSettings, topics: Topics, pki: SimPki, cert: PushCertFiles
) -> Iterator[RigFactory]:
    rigs: list[Rig] = []

    def build(
        shares: dict[Cause, float],
        devices: int | None = None,
        speed: float = 1.0,
        params: FleetParams | None = None,
        clock: Clock | None = None,
        enroll: bool = True,
        **spec: Any,
    ) -> Rig:
        sink = KafkaCheckinSink(kafka_settings)
        scenario = build_scenario(
            ScenarioSpec(devices or len(shares), {TENANT: cert.topic}, shares, seed=11, **spec),
            clock or Clock(speed),
            sink,
            params,
        )
        sim = ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki), scenario.fleet)
        scenario.fleet.attach(sim)
        scenario.fleet.start()
        rig = Rig(scenario, sim, CheckinLog(kafka_settings, topics.checkins), pki, cert)
        rigs.append(rig)
        if enroll:
            scenario.enroll_all()
        return rig

    yield build
    for rig in rigs:
        rig.close()
        rig.scenario.fleet.stop()
        rig.sim.stop()
        rig.log.close()


def test_enrollment_check_ins_carry_the_trifecta(make_rig: RigFactory) -> None:
    rig = make_rig({Cause.HEALTHY: 1, Cause.STALE_MAGIC: 1})
    healthy, stale = rig.device(Cause.HEALTHY), rig.device(Cause.STALE_MAGIC)
    assert stale.stale_enrollment is not None
    rig.log.until(lambda ev: len(ev) == 6)
    [update] = rig.log.of(healthy.udid, "TokenUpdate")
    assert update["message_type"] == "TOKEN_UPDATE" and update["source"] == "sim"
    assert (update["topic"], update["token_hex"], update["push_magic"]) == (
        rig.cert.topic, healthy.token_hex, healthy.enrollment.push_magic
    )
    assert update["tenant"] == TENANT and update["udid"] == healthy.udid
    # Two records of one device: same UDID and token, the older one with the older magic.
    [old] = rig.log.of(stale.stale_enrollment.enrollment_id, "TokenUpdate")
    [new] = rig.log.of(stale.udid, "TokenUpdate")
    assert old["udid"] == new["udid"] == stale.udid
    assert old["token_hex"] == new["token_hex"]
    assert old["push_magic"] != new["push_magic"]
    assert old["occurred_at"] < new["occurred_at"]


def test_healthy_device_polls_after_a_push(make_rig: RigFactory) -> None:
    rig = make_rig({Cause.HEALTHY: 1})
    device = rig.device(Cause.HEALTHY)
    pushed_at = rig.scenario.fleet.clock.now_ms()
    assert rig.push_to(device).status_code == 200
    rig.log.until(lambda _: idles(rig.log, device.udid) == 1)
    [idle] = rig.log.of(device.udid, "Idle")
    assert idle["message_type"] == "COMMAND_REPORT" and idle["status"] == "Idle"
    assert idle["occurred_at"] >= pushed_at + rig.scenario.fleet.params.checkin_delay_ms
    assert device.pushes_received == 1 and device.checkins_sent == 3


def test_offline_device_gets_the_stored_push_on_reconnect_but_not_an_expired_one(
    make_rig: RigFactory,
) -> None:
    rig = make_rig({Cause.OFFLINE: 1, Cause.HEALTHY: 0}, devices=2)
    fresh, stale = rig.scenario.by_cause(Cause.OFFLINE)
    assert rig.push_to(stale).status_code == 200
    e = fresh.enrollment
    # Stored by the simulator; the short-lived one expires while the device is away.
    assert rig.push(stale.enrollment.token_hex, stale.enrollment.push_magic,
                    expires_in_s=1).status_code == 200
    assert rig.push(e.token_hex, e.push_magic).status_code == 200
    rig.log.settle(2.2)
    assert idles(rig.log, fresh.udid) == idles(rig.log, stale.udid) == 0
    fleet = rig.scenario.fleet
    fleet.go_online(fresh)
    fleet.go_online(stale)
    rig.log.until(lambda _: idles(rig.log, fresh.udid) == 1)
    rig.log.settle(1.0)
    assert idles(rig.log, stale.udid) == 0
    assert rig.sim.sim.store.expired == 1 and rig.sim.sim.store.forwarded == 1
    assert fleet.stats().refused_offline == 3


def test_offline_device_comes_back_on_its_schedule(make_rig: RigFactory) -> None:
    rig = make_rig({Cause.OFFLINE: 1}, offline_for_ms=1500, clock=ManualClock())
    device = rig.device(Cause.OFFLINE)
    delay = rig.scenario.fleet.params.checkin_delay_ms
    assert rig.push_to(device).status_code == 200
    rig.advance(1499)
    assert not device.online and rig.sim.sim.store.peek(device.token_hex) is not None
    rig.advance(1)  # back online: the stored push is forwarded, the poll follows
    assert device.online and device.pushes_received == 1
    rig.advance(delay)
    rig.log.until(lambda _: idles(rig.log, device.udid) == 1)
    assert rig.log.of(device.udid, "Idle")[0]["occurred_at"] == (
        rig.scenario.fleet.clock.now_ms())


def test_race_device_misses_a_push_in_its_first_0_7_s_and_gets_a_later_one(
    make_rig: RigFactory,
) -> None:
    rig = make_rig({Cause.ENROLLMENT_RACE: 1}, enroll=False, clock=ManualClock())
    device = rig.device(Cause.ENROLLMENT_RACE)
    params = rig.scenario.fleet.params
    assert params.race_window_ms == 700
    rig.scenario.enroll_all()
    assert rig.push_to(device).status_code == 200  # the TokenUpdate's own instant
    rig.advance(params.race_window_ms - 1)
    assert rig.push_to(device).status_code == 200  # the window's last millisecond
    rig.sync()
    assert device.pushes_lost == 2 and device.pushes_received == 0
    rig.advance(1)
    assert rig.push_to(device).status_code == 200  # listening from here
    rig.advance(params.checkin_delay_ms)
    rig.log.until(lambda _: idles(rig.log, device.udid) == 1)
    receptions = rig.scenario.fleet.stats().receptions
    assert receptions[Reception.RACE_LOST.value] == 2
    assert receptions[Reception.ANSWERED.value] == 1


def test_wrong_topic_device_is_not_for_the_new_certificate(make_rig: RigFactory) -> None:
    rig = make_rig({Cause.WRONG_TOPIC: 1, Cause.HEALTHY: 1})
    device = rig.device(Cause.WRONG_TOPIC)
    retired = rig.scenario.retired_topics[TENANT]
    assert device.topic == retired != rig.cert.topic
    r = rig.push_to(device)  # the server's only certificate is the replacement
    assert r.status_code == 400 and r.json()["reason"] == "DeviceTokenNotForTopic"
    # Whoever still held the replaced certificate could reach it: the device is fine.
    old_cert = rig.pki.issue(retired)
    assert rig.push(device.token_hex, device.enrollment.push_magic, old_cert).status_code == 200
    rig.log.until(lambda _: idles(rig.log, device.udid) == 1)


def test_restored_device_gets_nothing_on_its_old_token_and_reports_a_new_one(
    make_rig: RigFactory,
) -> None:
    params = FleetParams(restore_update_delay_ms=1000)
    rig = make_rig({Cause.RESTORED_TOKEN: 1}, params=params)
    device = rig.device(Cause.RESTORED_TOKEN)
    old_token = device.enrollment.token_hex
    assert device.old_token_hex == old_token != device.token_hex
    pushed_at = rig.scenario.fleet.clock.now_ms()
    assert rig.push(old_token, device.enrollment.push_magic).status_code == 200  # "200 OK"
    assert rig.push(old_token, device.enrollment.push_magic).status_code == 200
    updates = lambda: rig.log.of(device.udid, "TokenUpdate")  # noqa: E731
    rig.log.until(lambda _: len(updates()) == 2)
    new = updates()[1]
    assert new["token_hex"] == device.token_hex
    assert new["occurred_at"] >= pushed_at + params.restore_update_delay_ms
    assert idles(rig.log, device.udid) == 0
    assert device.pushes_received == 0 and device.pushes_lost == 2
    # With the new token the server reaches it; the old one still answers 200 and leads nowhere.
    assert rig.push(device.token_hex, device.enrollment.push_magic).status_code == 200
    rig.log.until(lambda _: idles(rig.log, device.udid) == 1)
    assert rig.push(old_token, device.enrollment.push_magic).status_code == 200
    rig.log.settle(0.8)
    assert idles(rig.log, device.udid) == 1 and len(updates()) == 2


def test_stale_magic_self_heals_only_25_hours_after_the_first_wrong_push(
    make_rig: RigFactory,
) -> None:
    rig = make_rig({Cause.STALE_MAGIC: 1}, clock=ManualClock())
    device = rig.device(Cause.STALE_MAGIC)
    e1, e2 = device.stale_enrollment, device.enrollment
    assert e1 is not None and e1.token_hex == e2.token_hex
    clock = rig.scenario.fleet.clock
    delay = rig.scenario.fleet.params.checkin_delay_ms
    hour = 3600 * 1000
    rig.log.until(lambda ev: len(ev) == 4)

    def wrong() -> None:
        assert rig.push(e1.token_hex, e1.push_magic).status_code == 200

    def correct() -> None:
        assert rig.push(e2.token_hex, e2.push_magic).status_code == 200

    wrong()  # recorded, no contact
    rig.advance(delay)
    assert device.wrong_magic_since_ms is not None and device.checkins_sent == 4
    correct()  # within 25 h: resets the record (and answers under E2)
    rig.advance(delay)
    rig.log.until(lambda _: idles(rig.log, e2.enrollment_id) == 1)
    assert device.wrong_magic_since_ms is None
    wrong()  # a new record
    rig.sync()
    first = device.wrong_magic_since_ms
    assert first == clock.now_ms()
    rig.advance(16 * hour)
    wrong()  # 16 h later: still no contact
    rig.advance(delay)
    assert device.wrong_magic_since_ms == first and device.self_heals == 0
    assert device.checkins_sent == 5
    rig.advance(first + 25 * hour - 1 - clock.now_ms())
    wrong()  # one millisecond short of 25 h: still nothing (a wrong push schedules no contact)
    rig.sync()
    assert device.self_heals == 0 and device.wrong_magic_since_ms == first
    rig.advance(1)
    wrong()  # 25 h after the record: TokenUpdate + contact, under the device's own record
    rig.advance(delay)
    rig.log.until(lambda _: idles(rig.log, e2.enrollment_id) == 2)
    heal = rig.log.of(e2.enrollment_id, "TokenUpdate")[-1]
    assert heal["occurred_at"] - first >= 25 * 3600 * 1000
    assert heal["push_magic"] == e2.push_magic and heal["token_hex"] == e2.token_hex
    assert len(rig.log.of(e2.enrollment_id, "TokenUpdate")) == 2
    assert rig.log.of(e1.enrollment_id, "Idle") == []
    assert device.self_heals == 1 and device.wrong_magic_pushes == 5
    stats = rig.scenario.fleet.stats()
    assert stats.self_heals == 1 and stats.wrong_magic == 5
    assert device.wrong_magic_since_ms is None


def test_unenrolled_and_wiped_devices_ignore_pushes_and_only_checkout_says_so(
    make_rig: RigFactory,
) -> None:
    shares = {Cause.UNENROLLED_SILENT: 1, Cause.UNENROLLED_CHECKOUT: 1, Cause.WIPED: 1,
              Cause.HEALTHY: 1}
    rig = make_rig(shares)
    silent, checkout, wiped, healthy = (rig.device(c) for c in shares)
    for device in (silent, checkout, wiped, healthy):
        assert rig.push_to(device).status_code == 200  # APNs cannot tell
    rig.log.until(lambda _: idles(rig.log, healthy.udid) == 1)
    rig.log.settle(0.8)
    for device in (silent, checkout, wiped):
        assert idles(rig.log, device.udid) == 0
        assert device.pushes_lost == 1 and device.pushes_received == 0
    [out] = [e for e in rig.log.events if e["raw_message_type"] == "CheckOut"]
    assert out["enrollment_id"] == checkout.udid and out["message_type"] == "CHECK_OUT"
    stats = rig.scenario.fleet.stats()
    assert stats.receptions[Reception.NOT_ENROLLED.value] == 3
    assert stats.checkins["CheckOut"] == 1
