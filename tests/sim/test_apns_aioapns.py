"""Someone else's APNs client (aioapns) against the simulator.

aioapns offers no ALPN and chokes on a DATA frame after a 200, exactly the two places where a
home-made server drifts from real APNs. It only knows Apple's hosts, so
:func:`aioapns_for` points its protocol class at the simulator (a subclass with another
``APNS_SERVER``/``APNS_PORT``) and gives it an SSL context that trusts the test CA.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsDevelopmentClientProtocol

from services.sim.apns.certs import PushCertFiles, SimPki, make_pki
from services.sim.apns.fleet_port import AcceptAllGateway
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread

TOKEN = "0f" * 32


def aioapns_for(sim: SimulatorThread, pki: SimPki, cert: PushCertFiles) -> APNs:
    """An aioapns client aimed at the simulator (call inside a running loop)."""
    client = APNs(
        client_cert=str(cert.combined_path),
        topic=cert.topic,
        use_sandbox=True,
        ssl_context=ssl.create_default_context(cafile=str(pki.ca.cert_path)),
        max_connection_attempts=2,
    )
    client.pool.protocol_class = type(
        "SimulatorProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": sim.host, "APNS_PORT": sim.port},
    )
    return client


def mdm_request(token: str = TOKEN, magic: str = "magic") -> NotificationRequest:
    return NotificationRequest(
        device_token=token,
        message={"mdm": magic},
        push_type=PushType.MDM,
        time_to_live=3600,
        priority=10,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def gateway() -> AcceptAllGateway:
    return AcceptAllGateway()


@pytest.fixture
def sim(pki: SimPki, gateway: AcceptAllGateway) -> Iterator[SimulatorThread]:
    with ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki), gateway) as handle:
        yield handle


def test_aioapns_pushes_successfully(
    pki: SimPki, sim: SimulatorThread, gateway: AcceptAllGateway
) -> None:
    cert = pki.issue()
    request = mdm_request()

    async def run() -> tuple[bool, str]:
        client = aioapns_for(sim, pki, cert)
        try:
            result = await asyncio.wait_for(client.send_notification(request), 10)
        finally:
            client.pool.close()
        return result.is_successful, result.notification_id

    ok, apns_id = asyncio.run(run())
    assert ok
    assert apns_id == request.notification_id
    snap = sim.snapshot()
    assert snap.accepted == 1 and snap.by_topic == {cert.topic: 1}
    assert gateway.delivered == 1
    assert gateway.last is not None and gateway.last.apns_id == request.notification_id


def test_aioapns_many_concurrent_pushes_and_an_error(pki: SimPki, sim: SimulatorThread) -> None:
    cert = pki.issue()
    sim.faults.unregister(["ee" * 32], at_ms=1_650_000_000_000)

    async def run() -> tuple[list[bool], tuple[str, str | None, int | None]]:
        client = aioapns_for(sim, pki, cert)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.send_notification(mdm_request()) for _ in range(300))),
                30,
            )
            gone = await asyncio.wait_for(client.send_notification(mdm_request("ee" * 32)), 10)
        finally:
            client.pool.close()
        return [r.is_successful for r in results], (gone.status, gone.description, gone.timestamp)

    oks, gone = asyncio.run(run())
    assert all(oks) and len(oks) == 300
    assert gone == ("410", "Unregistered", 1_650_000_000_000)
    assert sim.snapshot().accepted == 300
