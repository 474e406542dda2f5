"""The APNs simulator seen through httpx (HTTP/2, client certificate), as a sender sees it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.sim.apns.certs import PushCertFiles, SimPki, make_pki, mdm_topic
from services.sim.apns.faults import Faults
from services.sim.apns.fleet_port import (
    STATUS_ACTIVE,
    STATUS_OTHER_TOPIC,
    STATUS_UNKNOWN,
    AcceptedPush,
    TokenStatus,
)
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread
from tests.support.manual_clock import ManualClock

TOKEN = "ab" * 32
MAGIC = {"mdm": "5d1c4f6e-push-magic"}
SimFactory = Callable[..., SimulatorThread]


class FakeFleet:
    """A minimal device fleet: per-token state and online flag, recording deliveries."""

    def __init__(self) -> None:
        self.status: dict[str, TokenStatus] = {}
        self.offline: set[str] = set()
        self.delivered: list[AcceptedPush] = []
        self.default = STATUS_ACTIVE
        self._lock = threading.Lock()

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        return self.status.get(token_hex, self.default)

    def deliver(self, push: AcceptedPush) -> bool:
        if push.token_hex in self.offline:
            return False
        with self._lock:
            self.delivered.append(push)
        return True


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def push_cert(pki: SimPki) -> PushCertFiles:
    return pki.issue()


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def make_sim(pki: SimPki, fleet: FakeFleet) -> Iterator[SimFactory]:
    started: list[SimulatorThread] = []

    def start(faults: Faults | None = None, **config: object) -> SimulatorThread:
        handle = ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki, **config), fleet, faults)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> SimulatorThread:
    return make_sim()


def client(pki: SimPki, sim: SimulatorThread, cert: PushCertFiles) -> httpx.Client:
    return httpx.Client(http2=True, verify=pki.client_context(cert), base_url=sim.url, timeout=10)


def mdm_headers(cert: PushCertFiles, **extra: str) -> dict[str, str]:
    headers = {
        "apns-topic": cert.topic,
        "apns-push-type": "mdm",
        "apns-priority": "10",
        "apns-expiration": str(int(time.time()) + 3600),
    }
    headers.update(extra)
    return headers


def push(c: httpx.Client, cert: PushCertFiles, token: str = TOKEN, **extra: str) -> httpx.Response:
    return c.post(f"/3/device/{token}", json=MAGIC, headers=mdm_headers(cert, **extra))


def reason(r: httpx.Response) -> str:
    return str(r.json()["reason"])


def test_accepts_mdm_push_echoes_apns_id_and_sends_no_body(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    apns_id = str(uuid.uuid4()).upper()
    with client(pki, sim, push_cert) as c:
        r = push(c, push_cert, **{"apns-id": apns_id})
    assert r.http_version == "HTTP/2"
    assert r.status_code == 200
    assert r.headers["apns-id"] == apns_id
    assert r.content == b""
    assert len(fleet.delivered) == 1
    delivered = fleet.delivered[0]
    assert delivered.apns_id == apns_id
    assert delivered.topic == push_cert.topic
    assert delivered.push_magic == MAGIC["mdm"]
    assert delivered.push_type == "mdm" and delivered.priority == 10
    snap = sim.snapshot()
    assert snap.accepted == 1 and snap.status(200) == 1
    assert snap.by_topic == {push_cert.topic: 1}
    assert snap.by_token == {TOKEN: 1}


def test_generates_apns_id_when_missing(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    with client(pki, sim, push_cert) as c:
        r = push(c, push_cert)
    assert r.status_code == 200
    uuid.UUID(r.headers["apns-id"])


def test_unique_id_only_when_configured(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    plain, development = make_sim(), make_sim(send_unique_id=True)
    with client(pki, plain, push_cert) as c:
        assert "apns-unique-id" not in push(c, push_cert).headers
    with client(pki, development, push_cert) as c:
        r = push(c, push_cert)
    assert r.status_code == 200 and r.content == b""
    uuid.UUID(r.headers["apns-unique-id"])


def test_missing_topic_and_push_type_default_to_certificate_and_mdm(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    with client(pki, sim, push_cert) as c:
        r = c.post(f"/3/device/{TOKEN}", json=MAGIC)
    assert r.status_code == 200
    assert fleet.delivered[0].topic == push_cert.topic
    assert fleet.delivered[0].push_type == "mdm"


BAD_REQUESTS = [
    # (method, path suffix, header overrides, body, status, reason)
    ("GET", f"/3/device/{TOKEN}", {}, None, 405, "MethodNotAllowed"),
    ("POST", f"/2/device/{TOKEN}", {}, None, 404, "BadPath"),
    ("POST", "/3/device/", {}, None, 400, "MissingDeviceToken"),
    ("POST", "/3/device/abc123", {}, None, 400, "BadDeviceToken"),
    ("POST", "/3/device/" + "zz" * 32, {}, None, 400, "BadDeviceToken"),
    ("POST", f"/3/device/{TOKEN}", {"apns-id": "not-a-uuid"}, None, 400, "BadMessageId"),
    ("POST", f"/3/device/{TOKEN}", {"apns-priority": "7"}, None, 400, "BadPriority"),
    ("POST", f"/3/device/{TOKEN}", {"apns-expiration": "soon"}, None, 400, "BadExpirationDate"),
    ("POST", f"/3/device/{TOKEN}", {"apns-push-type": "alert"}, None, 400, "InvalidPushType"),
    ("POST", f"/3/device/{TOKEN}", {"apns-push-type": "bogus"}, None, 400, "InvalidPushType"),
    ("POST", f"/3/device/{TOKEN}", {"apns-collapse-id": "c" * 65}, None, 400, "BadCollapseId"),
    ("POST", f"/3/device/{TOKEN}", {}, b"", 400, "PayloadEmpty"),
    ("POST", f"/3/device/{TOKEN}", {}, b'{"mdm": "' + b"x" * 5000 + b'"}', 413, "PayloadTooLarge"),
    ("POST", f"/3/device/{TOKEN}", {}, b'{"mdm": 1}', 400, "PayloadEmpty"),
    ("POST", f"/3/device/{TOKEN}", {}, b'{"mdm": "x", "aps": {}}', 400, "PayloadEmpty"),
    ("POST", f"/3/device/{TOKEN}", {}, b"not json", 400, "PayloadEmpty"),
    ("POST", f"/3/device/{TOKEN}", {"apns-topic": "com.example.app"}, None, 400, "TopicDisallowed"),
]


@pytest.mark.parametrize(("method", "path", "override", "body", "status", "why"), BAD_REQUESTS)
def test_rejects_like_apns(
    pki: SimPki,
    push_cert: PushCertFiles,
    sim: SimulatorThread,
    fleet: FakeFleet,
    method: str,
    path: str,
    override: dict[str, str],
    body: bytes | None,
    status: int,
    why: str,
) -> None:
    content = json.dumps(MAGIC).encode() if body is None else body
    with client(pki, sim, push_cert) as c:
        r = c.request(method, path, content=content, headers=mdm_headers(push_cert, **override))
    assert (r.status_code, reason(r)) == (status, why)
    uuid.UUID(r.headers["apns-id"])
    assert fleet.delivered == []
    assert sim.snapshot().by_reason == {why: 1}


def test_error_echoes_a_valid_apns_id(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    apns_id = str(uuid.uuid4())
    with client(pki, sim, push_cert) as c:
        r = push(c, push_cert, **{"apns-id": apns_id, "apns-priority": "3"})
    assert r.status_code == 400 and r.headers["apns-id"] == apns_id


def test_duplicate_headers(pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread) -> None:
    headers = [*mdm_headers(push_cert).items(), ("apns-priority", "5")]
    with client(pki, sim, push_cert) as c:
        r = c.post(f"/3/device/{TOKEN}", json=MAGIC, headers=headers)
    assert (r.status_code, reason(r)) == (400, "DuplicateHeaders")


def test_wrong_topic_for_the_certificate(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    other = pki.issue()
    with client(pki, sim, push_cert) as c:
        r = push(c, push_cert, **{"apns-topic": other.topic})
    assert (r.status_code, reason(r)) == (400, "TopicDisallowed")


def test_push_type_required_when_configured(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    sim = make_sim(require_push_type=True)
    with client(pki, sim, push_cert) as c:
        r = c.post(f"/3/device/{TOKEN}", json=MAGIC, headers={"apns-topic": push_cert.topic})
    assert (r.status_code, reason(r)) == (400, "InvalidPushType")


def test_revoked_certificate_by_serial_or_topic_at_run_time(
    pki: SimPki, sim: SimulatorThread
) -> None:
    by_serial, by_topic = pki.issue(), pki.issue()
    with client(pki, sim, by_serial) as c1, client(pki, sim, by_topic) as c2:
        assert push(c1, by_serial).status_code == 200
        assert push(c2, by_topic).status_code == 200
        sim.faults.revoke(serials=[by_serial.serial], topics=[by_topic.topic])
        for c, cert in ((c1, by_serial), (c2, by_topic)):
            r = push(c, cert)
            assert (r.status_code, reason(r)) == (403, "BadCertificate")


def test_expired_certificate_fails_the_handshake(pki: SimPki, sim: SimulatorThread) -> None:
    expired = pki.issue(expired=True)
    with client(pki, sim, expired) as c, pytest.raises(httpx.TransportError):
        push(c, expired)
    assert sim.snapshot().requests == 0


def test_certificate_from_another_ca_fails_the_handshake(
    pki: SimPki, sim: SimulatorThread, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path).issue()
    with client(pki, sim, stranger) as c, pytest.raises(httpx.TransportError):
        push(c, stranger)


def test_unregistered_token_410_with_timestamp(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    gone, forced = "cd" * 32, "ef" * 32
    fleet.status[gone] = TokenStatus.unregistered(1_700_000_000_123)
    sim.faults.unregister([forced], at_ms=1_600_000_000_000)
    with client(pki, sim, push_cert) as c:
        r1, r2 = push(c, push_cert, gone), push(c, push_cert, forced)
    assert r1.status_code == 410
    assert r1.json() == {"reason": "Unregistered", "timestamp": 1_700_000_000_123}
    assert r2.status_code == 410
    assert r2.json() == {"reason": "Unregistered", "timestamp": 1_600_000_000_000}


def test_token_of_another_topic(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    fleet.status[TOKEN] = STATUS_OTHER_TOPIC
    with client(pki, sim, push_cert) as c:
        r = push(c, push_cert)
    assert (r.status_code, reason(r)) == (400, "DeviceTokenNotForTopic")


def test_unknown_tokens_accepted_unless_configured(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory, fleet: FakeFleet
) -> None:
    fleet.default = STATUS_UNKNOWN
    lenient = make_sim()
    strict = make_sim(reject_unknown_tokens=True)
    with client(pki, lenient, push_cert) as c:
        assert push(c, push_cert).status_code == 200
    with client(pki, strict, push_cert) as c:
        r = push(c, push_cert)
    assert (r.status_code, reason(r)) == (400, "BadDeviceToken")


def test_too_many_requests_for_one_token(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    sim = make_sim(token_rate_limit=3, token_rate_window_s=60)
    with client(pki, sim, push_cert) as c:
        statuses = [push(c, push_cert).status_code for _ in range(5)]
        other = push(c, push_cert, "12" * 32)
        r = push(c, push_cert)
    assert statuses == [200, 200, 200, 429, 429]
    assert other.status_code == 200
    assert reason(r) == "TooManyRequests"


def test_store_and_forward_keeps_only_the_latest_push(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    fleet.offline.add(TOKEN)
    exp = str(int(time.time()) + 600)
    with client(pki, sim, push_cert) as c:
        for magic in ("first", "second"):
            r = c.post(
                f"/3/device/{TOKEN}",
                json={"mdm": magic},
                headers=mdm_headers(push_cert, **{"apns-expiration": exp}),
            )
            assert r.status_code == 200  # APNs says 200 to an offline device too
    assert fleet.delivered == []
    fleet.offline.discard(TOKEN)
    forwarded = sim.device_connected(TOKEN)
    assert forwarded is not None and forwarded.push_magic == "second"
    assert [p.push_magic for p in fleet.delivered] == ["second"]
    assert sim.device_connected(TOKEN) is None  # delivered once
    assert sim.sim.store.replaced == 1


def test_store_and_forward_drops_expired_pushes(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread, fleet: FakeFleet
) -> None:
    fleet.offline.update({TOKEN, "cd" * 32})
    with client(pki, sim, push_cert) as c:
        # expiration 0: deliver now or never, not stored
        assert push(c, push_cert, **{"apns-expiration": "0"}).status_code == 200
        soon = str(int(time.time()) + 1)
        assert push(c, push_cert, "cd" * 32, **{"apns-expiration": soon}).status_code == 200
    assert sim.sim.store.peek(TOKEN) is None
    assert sim.sim.store.peek("cd" * 32) is not None
    fleet.offline.clear()
    deadline = time.time() + 5
    while time.time() <= int(soon) and time.time() < deadline:
        time.sleep(0.05)
    assert sim.device_connected("cd" * 32) is None
    assert sim.sim.store.expired == 1
    assert fleet.delivered == []


def test_store_expiry_follows_the_pipelines_compressed_clock(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory, fleet: FakeFleet
) -> None:
    """The fleet lives on the pipeline's clock: a device back after 25 simulated hours must not
    get a push that expired after ten simulated hours, although in real time it would still be
    deliverable. The clock is a ManualClock the test moves, so only the pipeline clock can have
    expired the short push: if the store used real time, ``device_connected(short)`` would
    forward it and ``expired`` would stay 0."""
    clock = ManualClock()
    sim = make_sim(clock=clock)
    short, long = "cd" * 32, "ef" * 32
    fleet.offline.update({short, long})
    with client(pki, sim, push_cert) as c:
        before = clock.now_ms() / 1000
        ten_hours = str(int(before) + 10 * 3600)
        two_days = str(int(before) + 48 * 3600)
        assert push(c, push_cert, short, **{"apns-expiration": ten_hours}).status_code == 200
        assert push(c, push_cert, long, **{"apns-expiration": two_days}).status_code == 200
    after = clock.now_ms() / 1000
    stored = sim.sim.store.peek(long)
    assert stored is not None and before <= stored.received_at <= after  # pipeline clock too

    clock.advance(25 * 3_600_000)
    assert clock.now_ms() / 1000 > int(ten_hours) > time.time()  # expired only in pipeline time
    fleet.offline.clear()
    assert sim.device_connected(short) is None
    forwarded = sim.device_connected(long)
    assert forwarded is not None and forwarded.token_hex == long
    assert [p.token_hex for p in fleet.delivered] == [long]
    assert sim.sim.store.expired == 1


class ComesOnlineDuringDeliver:
    """A device that is offline when deliver() looks, and comes online (the fleet calling
    device_connected from its own thread) before the simulator has stored the push: the
    interleaving of the store race, made deterministic by doing it inside deliver()."""

    def __init__(self) -> None:
        self.sim: SimulatorThread | None = None
        self.online = False
        self.comes_online = True
        self.calls = 0
        self.delivered: list[AcceptedPush] = []

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        return STATUS_ACTIVE

    def deliver(self, push: AcceptedPush) -> bool:
        self.calls += 1
        if self.online:
            self.delivered.append(push)
            return True
        if not self.comes_online:
            return False
        assert self.sim is not None
        self.online = True
        assert self.sim.device_connected(push.token_hex) is None  # nothing stored yet
        return False


def test_push_racing_the_device_coming_online_is_delivered_not_stored(
    pki: SimPki, push_cert: PushCertFiles
) -> None:
    gateway = ComesOnlineDuringDeliver()
    with ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki), gateway) as sim:
        gateway.sim = sim
        with client(pki, sim, push_cert) as c:
            assert push(c, push_cert).status_code == 200
        assert [p.token_hex for p in gateway.delivered] == [TOKEN]
        assert gateway.calls == 2
        assert sim.sim.store.peek(TOKEN) is None and sim.sim.store.stored == 0
        # The device goes offline again: the next push is stored, with one deliver() call.
        gateway.online = gateway.comes_online = False
        with client(pki, sim, push_cert) as c:
            assert push(c, push_cert).status_code == 200
        assert gateway.calls == 3
        assert sim.sim.store.peek(TOKEN) is not None


def test_injected_shares_roughly_honoured_and_deterministic(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    def run() -> list[int]:
        faults = Faults(share_500=0.2, share_503=0.1, seed=42)
        sim = make_sim(faults)
        with client(pki, sim, push_cert) as c:
            return [push(c, push_cert).status_code for _ in range(400)]

    first, second = run(), run()
    assert first == second
    assert 50 <= first.count(500) <= 110  # expected 80
    assert 20 <= first.count(503) <= 60  # expected 40
    assert first.count(200) == 400 - first.count(500) - first.count(503)


def test_fault_answers_carry_apple_reasons(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    with client(pki, sim, push_cert) as c:
        sim.faults.share_500 = 1.0
        r500 = push(c, push_cert)
        sim.faults.share_500, sim.faults.share_503 = 0.0, 1.0
        r503 = push(c, push_cert)
        sim.faults.share_503 = 0.0
        ok = push(c, push_cert)
    assert (r500.status_code, reason(r500)) == (500, "InternalServerError")
    assert (r503.status_code, reason(r503)) == (503, "ServiceUnavailable")
    assert ok.status_code == 200


def test_connection_reset_fault(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    sim.faults.share_reset = 1.0
    with client(pki, sim, push_cert) as c:
        with pytest.raises(httpx.TransportError):
            push(c, push_cert)
        sim.faults.share_reset = 0.0
        assert push(c, push_cert).status_code == 200  # a new connection works
    snap = sim.snapshot()
    assert snap.resets == 1 and snap.connections_opened == 2


def test_latency_is_added_without_blocking_other_requests(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    """Twenty requests held by a long latency are all with the simulator (counted as accepted)
    while a later request, with the latency lifted, is answered: the delay parks answers, it
    does not block the loop. Ordering, not timing: the held answers are never awaited (the
    simulator stops with them pending). The later request uses a second connection because
    httpx's HTTP/2 client itself queues new streams behind a busy connection's."""
    sim = make_sim(Faults(latency_ms=300))

    def client_for() -> httpx.AsyncClient:
        return httpx.AsyncClient(http2=True, verify=pki.client_context(push_cert),
                                 base_url=sim.url, timeout=600)

    async def burst() -> tuple[float, int, list[bool]]:
        async with client_for() as c, client_for() as other:
            t0 = time.perf_counter()
            first = await c.post(f"/3/device/{TOKEN}", json=MAGIC)  # connects, and is delayed
            delayed = time.perf_counter() - t0
            assert first.status_code == 200
            sim.faults.latency_ms = 600_000.0
            held = [asyncio.ensure_future(c.post(f"/3/device/{TOKEN}", json=MAGIC))
                    for _ in range(20)]
            while sim.snapshot().accepted < 21:  # all twenty handled, answers pending
                await asyncio.sleep(0.01)
            sim.faults.latency_ms = 0.0
            prompt = await other.post(f"/3/device/{TOKEN}", json=MAGIC)
            pending = [not h.done() for h in held]
            for h in held:
                h.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            return delayed, prompt.status_code, pending

    delayed, prompt, pending = asyncio.run(burst())
    assert delayed >= 0.3  # never early (an upper bound would be a wall-clock guess)
    assert prompt == 200
    assert pending == [True] * 20


def test_goaway_after_n_streams_httpx_reconnects(
    pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory
) -> None:
    sim = make_sim(Faults(goaway_after_streams=3))
    with client(pki, sim, push_cert) as c:
        statuses = [push(c, push_cert).status_code for _ in range(7)]
    assert statuses == [200] * 7
    snap = sim.snapshot()
    assert snap.goaways == 2 and snap.connections_opened == 3


def test_reset_stats_starts_counting_afresh(
    pki: SimPki, push_cert: PushCertFiles, sim: SimulatorThread
) -> None:
    with client(pki, sim, push_cert) as c:
        push(c, push_cert)
        sim.call(sim.sim.reset_stats)
        push(c, push_cert)
        snap = sim.snapshot()
    assert snap.accepted == 1 and snap.connections_open == 1


def test_stop_is_clean(pki: SimPki, push_cert: PushCertFiles, make_sim: SimFactory) -> None:
    sim = make_sim()
    with client(pki, sim, push_cert) as c:
        assert push(c, push_cert).status_code == 200
        sim.stop()
        assert sim.snapshot().connections_open == 0
        with pytest.raises(httpx.TransportError):
            push(c, push_cert)


def test_mdm_topic_helper_shape() -> None:
    assert mdm_topic().startswith("com.apple.mgmt.External.")
