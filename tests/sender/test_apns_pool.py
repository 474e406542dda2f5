"""Certificate files on disk and the client pool, against the real APNs simulator."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.sender.apns.pool import (
    DEFAULT_TRANSPORT,
    CertificateStore,
    ClientPool,
    UnknownCertificateError,
)
from services.sender.apns.types import ApnsRequest, ApnsResponse
from services.sender.job import Lane
from services.sim.apns.certs import (
    CertificateAuthority,
    issue_push_certificate,
    make_ca,
    make_server_cert,
    mdm_topic,
)
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def sim(ca: CertificateAuthority, tmp_path: Path) -> Iterator[SimulatorThread]:
    server = make_server_cert(ca, tmp_path / "server")
    config = SimulatorConfig(
        server_cert=server.cert_path, server_key=server.key_path, ca_cert=ca.cert_path
    )
    with ApnsSimulator.run_in_thread(config) as handle:
        yield handle


@pytest.fixture
def store_dir(ca: CertificateAuthority, tmp_path: Path) -> Path:
    directory = tmp_path / "push-certs"
    for _ in range(2):
        issue_push_certificate(ca, mdm_topic(), directory)
    return directory


def push(topic: str) -> ApnsRequest:
    return ApnsRequest(
        correlation_id=str(uuid.uuid4()),
        token_hex=secrets.token_hex(32),
        topic=topic,
        payload=b'{"mdm":"magic"}',
        apns_id=str(uuid.uuid4()),
        expiration=0,
    )


def drain(pool: ClientPool, expected: int) -> list[ApnsResponse]:
    answers: list[ApnsResponse] = []
    deadline = time.monotonic() + 8.0
    while len(answers) < expected and time.monotonic() < deadline:
        answers.extend(pool.poll(0.05))
    return answers


def test_store_finds_mounted_files(store_dir: Path) -> None:
    store = CertificateStore(store_dir)
    topics = store.topics()
    assert len(topics) == 2
    files = store.files_for(topics[0])
    assert files.cert_path == store_dir / f"{topics[0]}.pem"
    assert files.key_path == store_dir / f"{topics[0]}.key"


@pytest.mark.parametrize(
    "topic", ["com.example.absent", "../push-certs/x", "a/b", "..", "", ".hidden", "a\x00b"]
)
def test_store_refuses_unknown_and_unsafe_topics(store_dir: Path, topic: str) -> None:
    with pytest.raises(UnknownCertificateError):
        CertificateStore(store_dir).files_for(topic)


def test_unknown_transport_name_is_refused(store_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown transport"):
        ClientPool(CertificateStore(store_dir), "https://127.0.0.1:1", transport="carrier-pigeon")


@pytest.mark.parametrize("transport", [DEFAULT_TRANSPORT, "httpx"])
def test_one_client_per_certificate_all_answers_merged(
    transport: str, store_dir: Path, ca: CertificateAuthority, sim: SimulatorThread
) -> None:
    store = CertificateStore(store_dir)
    pool = ClientPool(store, sim.url, transport=transport, ca_path=ca.cert_path)
    requests = [push(topic) for topic in store.topics() for _ in range(50)]
    for request in requests:
        pool.submit(request)
    assert pool.in_flight == len(requests)
    answers = drain(pool, len(requests))
    assert sorted(a.correlation_id for a in answers) == sorted(r.correlation_id for r in requests)
    assert {a.status for a in answers} == {200}
    assert sorted(topic for _, topic, _ in pool.open_clients) == store.topics()
    assert sim.snapshot().connections_opened == 2
    assert pool.close() == []
    assert pool.open_clients == []


def test_priority_pushes_have_a_connection_of_their_own(
    store_dir: Path, ca: CertificateAuthority, sim: SimulatorThread
) -> None:
    store = CertificateStore(store_dir)
    topic = store.topics()[0]
    pool = ClientPool(store, sim.url, ca_path=ca.cert_path)
    bulk = [push(topic) for _ in range(20)]
    for request in bulk:
        pool.submit(request)
    urgent = push(topic)
    pool.submit(urgent, lane=Lane.PRIORITY)
    answers = drain(pool, len(bulk) + 1)
    assert {a.correlation_id for a in answers} == {r.correlation_id for r in [*bulk, urgent]}
    assert pool.open_clients == [(sim.url, topic, Lane.PRIORITY), (sim.url, topic, Lane.BULK)]
    assert sim.snapshot().connections_opened == 2
    pool.close()


def test_unknown_certificate_fails_before_sending(store_dir: Path, sim: SimulatorThread) -> None:
    pool = ClientPool(CertificateStore(store_dir), sim.url)
    with pytest.raises(UnknownCertificateError):
        pool.submit(push("com.example.not.mounted"))
    assert pool.open_clients == [] and pool.in_flight == 0


@pytest.mark.parametrize("transport", [DEFAULT_TRANSPORT, "httpx"])
def test_idle_client_is_closed_and_reopened_on_demand(
    transport: str, store_dir: Path, ca: CertificateAuthority, sim: SimulatorThread
) -> None:
    store = CertificateStore(store_dir)
    topic = store.topics()[0]
    pool = ClientPool(store, sim.url, transport=transport, ca_path=ca.cert_path, idle_timeout_s=0.3)
    pool.submit(push(topic))
    assert [a.status for a in drain(pool, 1)] == [200]
    assert pool.open_clients == [(sim.url, topic, Lane.BULK)]
    deadline = time.monotonic() + 3.0
    while (pool.open_clients or sim.snapshot().connections_open) and time.monotonic() < deadline:
        pool.poll(0.05)
        time.sleep(0.05)
    assert pool.open_clients == []
    assert sim.snapshot().connections_open == 0  # the server saw the connection go
    pool.submit(push(topic))
    assert [a.status for a in drain(pool, 1)] == [200]
    assert sim.snapshot().connections_opened == 2
    pool.close()
