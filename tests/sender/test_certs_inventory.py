"""Push certificate inventory and lifecycle on real files, real TLS clients and the real APNs
simulator: what a certificate says (topic, serial, validity, issuer), renewal picked up while
sending, a certificate created instead of renewed refused while the old one keeps sending, the
gauges and `mdmpush certs list`."""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.cli.certs_cmd import certificate_rows
from services.cli.main import main as cli_main
from services.common.push_certs import CertificateStatus, parse_certificate, read_certificate_file
from services.sender.apns.certificates import CertificateStore, UnknownCertificateError
from services.sender.apns.pool import ClientPool
from services.sender.apns.types import ApnsRequest, ApnsResponse
from services.sender.metrics import CertificateCollector
from services.sim.apns.certs import SimPki, issue_push_certificate, make_pki, mdm_topic
from services.sim.apns.faults import Faults
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def sim(pki: SimPki, faults: Faults) -> Iterator[SimulatorThread]:
    with ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki), faults=faults) as handle:
        yield handle


def issue(pki: SimPki, topic: str, directory: Path, *, name: str | None = None,
          valid_days: int = 365, expired: bool = False) -> int:
    """Mount a certificate for `topic` as `<name or topic>.pem/.key`; returns its serial."""
    return issue_push_certificate(pki.ca, topic, directory, name=name, valid_days=valid_days,
                                  expired=expired).serial


def push(topic: str) -> ApnsRequest:
    return ApnsRequest(correlation_id=str(uuid.uuid4()), token_hex=secrets.token_hex(32),
                       topic=topic, payload=b'{"mdm":"magic"}', apns_id=str(uuid.uuid4()),
                       expiration=0)


def send(pool: ClientPool, topic: str, count: int) -> list[ApnsResponse]:
    requests = [push(topic) for _ in range(count)]
    for request in requests:
        pool.submit(request)
    answers: list[ApnsResponse] = []
    deadline = time.monotonic() + 15
    while len(answers) < count and time.monotonic() < deadline:
        answers.extend(pool.poll(0.05))
    assert sorted(a.correlation_id for a in answers) == sorted(r.correlation_id for r in requests)
    return answers


def in_use_serial(store: CertificateStore, topic: str) -> int | None:
    state = next((s for s in store.states() if s.topic == topic), None)
    return None if state is None or state.in_use is None else state.in_use.serial


def poll_until(pool: ClientPool, done: Callable[[], bool],
               limit_s: float = 5.0) -> list[ApnsResponse]:
    """Run the pool's loop (which refreshes the store) until `done()` holds; its answers."""
    answers: list[ApnsResponse] = []
    deadline = time.monotonic() + limit_s
    while not done() and time.monotonic() < deadline:
        answers.extend(pool.poll(0.02))
    assert done(), "the store did not pick the change up"
    return answers


def test_the_certificate_s_facts_are_read(pki: SimPki, tmp_path: Path) -> None:
    topic = mdm_topic()
    serial = issue(pki, topic, tmp_path, valid_days=9)
    now = dt.datetime.now(dt.UTC)
    facts = read_certificate_file(tmp_path / f"{topic}.pem")
    assert facts.topic == topic and facts.serial == serial
    assert facts.issuer == "CN=mdmpush test CA"
    assert facts.not_before < now < facts.not_after
    assert 8.9 < facts.days_left(now) <= 9
    assert facts.status(now) is CertificateStatus.EXPIRING
    assert facts.status(now, expiring_days=5) is CertificateStatus.OK
    assert facts.status(facts.not_after + dt.timedelta(seconds=1)) is CertificateStatus.EXPIRED
    old_topic = mdm_topic()
    expired = issue(pki, old_topic, tmp_path, expired=True)
    old = read_certificate_file(tmp_path / f"{old_topic}.pem")
    assert old.serial == expired and old.status(now) is CertificateStatus.EXPIRED
    assert parse_certificate(pki.ca.cert_path.read_bytes()).topic is None  # not a push cert


def test_a_renewed_certificate_is_used_without_restart(
    pki: SimPki, sim: SimulatorThread, faults: Faults, tmp_path: Path
) -> None:
    topic = mdm_topic()
    old = issue(pki, topic, tmp_path)
    store = CertificateStore(tmp_path)
    pool = ClientPool(store, sim.url, ca_path=pki.ca.cert_path, reload_s=0.01)
    assert {a.status for a in send(pool, topic, 20)} == {200}

    # Requests in flight on the old connection when the renewal lands still get their answer.
    in_flight = [push(topic) for _ in range(20)]
    for request in in_flight:
        pool.submit(request)
    new = issue(pki, topic, tmp_path)
    answers = poll_until(pool, lambda: in_use_serial(store, topic) == new)
    deadline = time.monotonic() + 10
    while len(answers) < len(in_flight) and time.monotonic() < deadline:
        answers.extend(pool.poll(0.05))
    assert {a.status for a in answers} == {200} and len(answers) == len(in_flight)

    # From now on APNs refuses the old certificate: only the renewed one can still send.
    faults.revoke(serials=[old])
    assert {a.status for a in send(pool, topic, 20)} == {200}
    assert sim.snapshot().connections_opened == 2
    assert sim.snapshot().status(403) == 0
    pool.close()


def test_a_certificate_created_instead_of_renewed_is_refused_and_the_old_one_keeps_sending(
    pki: SimPki, sim: SimulatorThread, faults: Faults, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = mdm_topic()
    old = issue(pki, topic, tmp_path)
    store = CertificateStore(tmp_path)
    pool = ClientPool(store, sim.url, ca_path=pki.ca.cert_path, reload_s=0.01)
    assert {a.status for a in send(pool, topic, 10)} == {200}

    created = mdm_topic()
    with caplog.at_level(logging.ERROR, logger="services.sender.apns.certificates"):
        wrong = issue(pki, created, tmp_path, name=topic)  # <topic>.pem now holds another UID
        poll_until(pool, lambda: any(s.refused for s in store.states()))
        for _ in range(20):  # looked at again and again: judged (and logged) once
            pool.poll(0.01)
    (state,) = store.states()
    assert state.refused is not None and state.refused.found_topic == created
    assert state.in_use is not None and state.in_use.serial == old
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1
    assert f"{topic}.pem refused" in refusals[0] and created in refusals[0]
    assert "still using serial " + format(old, "X") in refusals[0]

    # The old connection was retired (its file changed on disk): the new one presents the old
    # certificate from the private copy. APNs refuses the created one, as for a wrong topic.
    faults.revoke(serials=[wrong])
    assert {a.status for a in send(pool, topic, 20)} == {200}
    assert sim.snapshot().connections_opened == 2

    # The operator then mounts the real renewal: taken, refusal cleared.
    renewed = issue(pki, topic, tmp_path)
    poll_until(pool, lambda: in_use_serial(store, topic) == renewed)
    assert store.states()[0].refused is None
    faults.revoke(serials=[old])
    assert {a.status for a in send(pool, topic, 10)} == {200}
    copies = store._copies
    pool.close()
    assert copies is not None and not copies.exists()  # the private copy is gone with the pool


def test_a_file_of_another_topic_with_nothing_in_use_is_not_used(
    pki: SimPki, tmp_path: Path
) -> None:
    topic = mdm_topic()
    issue(pki, mdm_topic(), tmp_path, name=topic)
    store = CertificateStore(tmp_path)
    with pytest.raises(UnknownCertificateError):
        store.files_for(topic)
    (state,) = store.states()
    assert state.in_use is None and state.refused is not None


def test_a_key_that_does_not_match_is_not_taken_until_it_does(pki: SimPki, tmp_path: Path) -> None:
    topic = mdm_topic()
    old = issue(pki, topic, tmp_path)
    store = CertificateStore(tmp_path)
    key = (tmp_path / f"{topic}.key").read_bytes()
    new = issue(pki, topic, tmp_path)
    renewed_key = (tmp_path / f"{topic}.key").read_bytes()
    (tmp_path / f"{topic}.key").write_bytes(key)  # the certificate arrived, its key not yet
    assert store.refresh() == set()
    assert in_use_serial(store, topic) == old
    (tmp_path / f"{topic}.key").write_bytes(renewed_key)
    assert store.refresh() == {topic}
    assert in_use_serial(store, topic) == new


def test_a_certificate_mounted_after_start_is_found_on_first_use(
    pki: SimPki, tmp_path: Path
) -> None:
    store = CertificateStore(tmp_path)
    topic = mdm_topic()
    with pytest.raises(UnknownCertificateError):
        store.files_for(topic)
    issue(pki, topic, tmp_path)
    assert store.files_for(topic).cert_path == tmp_path / f"{topic}.pem"
    (tmp_path / f"{topic}.pem").unlink()
    assert store.refresh() == {topic}
    with pytest.raises(UnknownCertificateError):
        store.files_for(topic)


def test_gauges_start_at_known_values_and_follow_a_refusal(pki: SimPki, tmp_path: Path) -> None:
    ok, expiring = mdm_topic(), mdm_topic()
    issue(pki, ok, tmp_path)
    issue(pki, expiring, tmp_path, valid_days=5)
    store = CertificateStore(tmp_path)
    registry = CollectorRegistry()
    registry.register(CertificateCollector(store))

    def gauge(name: str, topic: str) -> float | None:
        return registry.get_sample_value(f"mdmpush_push_certificate_{name}", {"topic": topic})

    for topic in (ok, expiring):
        not_after = read_certificate_file(tmp_path / f"{topic}.pem").not_after.timestamp()
        assert gauge("expiry_timestamp_seconds", topic) == not_after
        assert gauge("replacement_refused", topic) == 0
        assert gauge("unreachable_enrollments", topic) == 0
        assert gauge("enrollments", topic) is None  # not counted: no census here
    expiry = gauge("expiry_timestamp_seconds", expiring)
    assert expiry is not None and expiry - time.time() < 5 * 86400

    issue(pki, mdm_topic(), tmp_path, name=ok)
    store.refresh()
    assert gauge("replacement_refused", ok) == 1
    unreachable = gauge("unreachable_enrollments", ok)
    assert unreachable is not None and math.isnan(unreachable)  # refused, not counted
    assert gauge("replacement_refused", expiring) == 0


def test_certs_list_shows_every_certificate_and_its_status(
    pki: SimPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok, expiring, expired, recreated = (mdm_topic() for _ in range(4))
    serial = issue(pki, ok, tmp_path)
    issue(pki, expiring, tmp_path, valid_days=10)
    issue(pki, expired, tmp_path, expired=True)
    other = mdm_topic()
    issue(pki, other, tmp_path, name=recreated)
    rows, healthy = certificate_rows(tmp_path, dt.datetime.now(dt.UTC))
    by_topic = {row[0]: row for row in rows}
    assert set(by_topic) == {ok, expiring, expired, recreated}  # .combined.pem has no .key
    assert by_topic[ok][1] == format(serial, "X") and by_topic[ok][2] == "CN=mdmpush test CA"
    assert by_topic[ok][5] == "ok" and by_topic[ok][4] in ("364", "365")
    assert by_topic[expiring][5] == "expiring" and by_topic[expiring][4] in ("9", "10")
    assert by_topic[expired][5] == "expired"
    assert by_topic[recreated][5] == f"refused: its topic is {other}"
    assert not healthy

    assert cli_main(["certs", "list", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["topic", "serial", "issuer", "not", "after", "days", "left",
                              "status"]
    assert len(out) == 5

    only_ok = tmp_path / "ok"
    issue(pki, mdm_topic(), only_ok)
    assert cli_main(["certs", "list", str(only_ok)]) == 0
    assert cli_main(["certs", "list", str(tmp_path / "absent")]) == 2


def test_a_renewal_expiring_sooner_is_taken_with_a_warning(
    pki: SimPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = mdm_topic()
    issue(pki, topic, tmp_path)
    store = CertificateStore(tmp_path)
    older = issue(pki, topic, tmp_path, valid_days=30)  # an old file mounted by mistake
    with caplog.at_level(logging.INFO, logger="services.sender.apns.certificates"):
        assert store.refresh() == {topic}
    assert in_use_serial(store, topic) == older
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "sooner than before" in record.getMessage()
