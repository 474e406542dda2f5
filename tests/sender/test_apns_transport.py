"""Both transports against the real APNs simulator (HTTP/2, TLS, client-certificate auth).

No I/O is mocked: every answer, reset and GOAWAY here crossed a loopback TLS connection.
"""

from __future__ import annotations

import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.sender.apns.classify import Verdict, classify
from services.sender.apns.httpx_transport import HttpxTransport
from services.sender.apns.pycurl_transport import PycurlTransport
from services.sender.apns.transport import ApnsTransport, TransportConfig
from services.sender.apns.types import ApnsRequest, ApnsResponse, TransportError
from services.sim.apns.certs import (
    PushCertFiles,
    issue_push_certificate,
    make_ca,
    make_server_cert,
    mdm_topic,
)
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread

Factory = Callable[[TransportConfig], ApnsTransport]
TRANSPORTS: dict[str, Factory] = {"pycurl": PycurlTransport, "httpx": HttpxTransport}
MDM_PAYLOAD = b'{"mdm":"00000000-1111-2222-3333-444444444444"}'


class Pki:
    """A CA, the simulator's certificate and one push certificate, all as files."""

    def __init__(self, directory: Path) -> None:
        ca = make_ca(directory / "ca")
        self.ca_path = ca.cert_path
        self.server = make_server_cert(ca, directory / "ca")
        self.push: PushCertFiles = issue_push_certificate(ca, mdm_topic(), directory / "push")
        stranger = make_ca(directory / "other-ca")
        self.untrusted: PushCertFiles = issue_push_certificate(
            stranger, mdm_topic(), directory / "untrusted"
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def start_simulator(pki: Pki, **config: object) -> SimulatorThread:
    sim_config = SimulatorConfig(
        server_cert=pki.server.cert_path,
        server_key=pki.server.key_path,
        ca_cert=pki.ca_path,
        **config,  # type: ignore[arg-type]
    )
    return ApnsSimulator.run_in_thread(sim_config)


@pytest.fixture
def sim(pki: Pki) -> Iterator[SimulatorThread]:
    handle = start_simulator(pki)
    yield handle
    handle.stop()


@pytest.fixture(params=sorted(TRANSPORTS))
def factory(request: pytest.FixtureRequest) -> Factory:
    return TRANSPORTS[request.param]


def config_for(url: str, pki: Pki, **overrides: object) -> TransportConfig:
    settings: dict[str, object] = {
        "base_url": url,
        "cert_path": pki.push.cert_path,
        "key_path": pki.push.key_path,
        "ca_path": pki.ca_path,
        "request_timeout_s": 5.0,
        "connect_timeout_s": 2.0,
    }
    settings.update(overrides)
    return TransportConfig(**settings)  # type: ignore[arg-type]


def push(topic: str, token: str | None = None) -> ApnsRequest:
    return ApnsRequest(
        correlation_id=str(uuid.uuid4()),
        token_hex=token or secrets.token_hex(32),
        topic=topic,
        payload=MDM_PAYLOAD,
        apns_id=str(uuid.uuid4()),
        expiration=0,
    )


def drain(transport: ApnsTransport, expected: int, deadline_s: float = 8.0) -> list[ApnsResponse]:
    """Poll until ``expected`` answers arrived or the deadline passed (bounded, never hangs)."""
    answers: list[ApnsResponse] = []
    deadline = time.monotonic() + deadline_s
    while len(answers) < expected and time.monotonic() < deadline:
        answers.extend(transport.poll(0.05))
    return answers


def assert_each_answered_once(requests: list[ApnsRequest], answers: list[ApnsResponse]) -> None:
    counts = Counter(answer.correlation_id for answer in answers)
    assert counts == Counter(request.correlation_id for request in requests)


def submit_many(transport: ApnsTransport, topic: str, count: int) -> list[ApnsRequest]:
    """Submit ``count`` pushes at once, so they share the connection and its stream limit."""
    requests = [push(topic) for _ in range(count)]
    for request in requests:
        transport.submit(request)
    return requests


def send_many(
    transport: ApnsTransport, topic: str, count: int, deadline_s: float = 8.0
) -> list[ApnsResponse]:
    """``count`` pushes at once and their answers, each asserted to come back exactly once."""
    requests = submit_many(transport, topic, count)
    answers = drain(transport, count, deadline_s)
    assert_each_answered_once(requests, answers)
    return answers


def test_success_echoes_apns_id(factory: Factory, pki: Pki, sim: SimulatorThread) -> None:
    transport = factory(config_for(sim.url, pki))
    request = push(pki.push.topic)
    transport.submit(request)
    assert transport.in_flight == 1
    [answer] = drain(transport, 1)
    assert transport.close() == []
    assert (answer.status, answer.apns_id, answer.error_kind) == (200, request.apns_id, None)
    assert answer.correlation_id == request.correlation_id
    assert answer.latency_ms > 0
    assert transport.in_flight == 0
    assert sim.snapshot().accepted == 1


def test_error_answers_are_classified(factory: Factory, pki: Pki) -> None:
    topic = pki.push.topic
    dead_token = secrets.token_hex(32)
    limited_token = secrets.token_hex(32)
    with start_simulator(pki, token_rate_limit=1, token_rate_window_s=60.0) as sim:
        sim.faults.unregister([dead_token], at_ms=1_700_000_000_000)
        requests = {
            "bad-token": push(topic, token="zz-not-hex"),
            "wrong-topic": push("com.example.not.this.certificate"),
            "unregistered": push(topic, token=dead_token),
            "first": push(topic, token=limited_token),
        }
        transport = factory(config_for(sim.url, pki))
        for request in requests.values():
            transport.submit(request)
        by_id = {a.correlation_id: a for a in drain(transport, len(requests))}
        # Only after the first one was answered, so the rate limit counts it first.
        too_often = push(topic, token=limited_token)
        transport.submit(too_often)
        [limited] = drain(transport, 1)
        sim.faults.share_500 = 1.0
        transport.submit(push(topic))
        [failed] = drain(transport, 1)
        sim.faults.share_500 = 0.0
        sim.faults.revoke(topics=[topic])
        transport.submit(push(topic))
        [revoked] = drain(transport, 1)
        transport.close()

    answers = {name: by_id[r.correlation_id] for name, r in requests.items()}
    assert (answers["bad-token"].status, answers["bad-token"].reason) == (400, "BadDeviceToken")
    assert answers["wrong-topic"].status == 400
    assert classify(answers["bad-token"]).verdict is Verdict.PERMANENT
    assert classify(answers["wrong-topic"]).verdict is Verdict.PERMANENT
    dead = classify(answers["unregistered"])
    assert (dead.verdict, dead.reason, dead.token_dead_since_ms) == (
        Verdict.PERMANENT,
        "Unregistered",
        1_700_000_000_000,
    )
    assert classify(answers["first"]).verdict is Verdict.SENT
    assert (limited.status, limited.reason) == (429, "TooManyRequests")
    assert classify(limited).long_backoff
    assert (failed.status, classify(failed).verdict) == (500, Verdict.TRANSIENT)
    assert (revoked.status, revoked.reason) == (403, "BadCertificate")
    assert classify(revoked).verdict is Verdict.CERTIFICATE


def test_many_concurrent_requests_each_answered_once(
    factory: Factory, pki: Pki, sim: SimulatorThread
) -> None:
    # The timeouts only bound a hang: httpx and the simulator share this process's GIL, and on a
    # loaded machine 2,000 pushes took over 30 s (requests and a connect timed out at 5 s and 2 s);
    # a correct transport ends far sooner.
    transport = factory(config_for(sim.url, pki, request_timeout_s=60.0, connect_timeout_s=60.0))
    answers = send_many(transport, pki.push.topic, 2000, deadline_s=120.0)
    transport.close()
    assert {a.status for a in answers} == {200}
    assert sim.snapshot().connections_opened == 1


def test_server_stream_limit_is_honoured(factory: Factory, pki: Pki) -> None:
    """A server allowing 5 streams at once still answers all 200 pushes, none refused."""
    with start_simulator(pki, max_concurrent_streams=5) as sim:
        sim.faults.latency_ms = 2.0
        transport = factory(config_for(sim.url, pki))
        answers = send_many(transport, pki.push.topic, 200, deadline_s=60.0)
        transport.close()
    assert {a.status for a in answers} == {200}


def test_goaway_loses_and_duplicates_nothing(factory: Factory, pki: Pki) -> None:
    """GOAWAY after every 50 streams: each push gets exactly one answer, none is lost.

    libcurl replays the streams the server did not process on a new connection, so every push
    ends 200. httpcore fails every stream still open on the connection (a write error after the
    server hangs up), even some the server had answered: those come back as errors to retry,
    i.e. a possible duplicate wake-up, never a loss, and never a 200 that APNs did not give.
    """
    with start_simulator(pki) as sim:
        sim.faults.goaway_after_streams = 50
        transport = factory(config_for(sim.url, pki))
        pushes = 300
        answers = send_many(transport, pki.push.topic, pushes, deadline_s=15.0)
        snapshot = sim.snapshot()
        transport.close()
    assert snapshot.goaways >= 1
    accepted = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status is None]
    assert len(accepted) + len(refused) == pushes
    assert len(accepted) <= snapshot.accepted
    assert all(classify(a).retry for a in refused)
    if isinstance(transport, PycurlTransport):
        assert len(accepted) == snapshot.accepted == pushes


def test_connection_reset_answers_every_in_flight_request(factory: Factory, pki: Pki) -> None:
    with start_simulator(pki) as sim:
        sim.faults.share_reset = 1.0
        transport = factory(config_for(sim.url, pki))
        answers = send_many(transport, pki.push.topic, 100)
        transport.close()
    assert {a.error_kind for a in answers} <= {TransportError.CONNECTION, TransportError.STREAM}
    assert any(classify(a).opens_breaker for a in answers)


def test_untrusted_certificate_opens_the_breaker(
    factory: Factory, pki: Pki, sim: SimulatorThread
) -> None:
    """The server refuses a certificate from another CA; with TLS 1.3 the client may see
    that as an alert or as a plain reset, and both verdicts pause the certificate."""
    config = config_for(
        sim.url, pki, cert_path=pki.untrusted.cert_path, key_path=pki.untrusted.key_path
    )
    transport = factory(config)
    transport.submit(push(pki.untrusted.topic))
    [answer] = drain(transport, 1)
    transport.close()
    assert answer.error_kind in (TransportError.CERTIFICATE, TransportError.CONNECTION)
    assert classify(answer).opens_breaker
    assert sim.snapshot().requests == 0


def test_key_not_matching_certificate_is_a_certificate_error(
    factory: Factory, pki: Pki, sim: SimulatorThread
) -> None:
    config = config_for(sim.url, pki, key_path=pki.untrusted.key_path)
    transport = factory(config)
    transport.submit(push(pki.push.topic))
    [answer] = drain(transport, 1)
    transport.close()
    assert answer.error_kind is TransportError.CERTIFICATE, answer.error
    assert classify(answer).verdict is Verdict.CERTIFICATE


def test_refused_connection_is_a_connection_error(factory: Factory, pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = factory(config_for(f"https://127.0.0.1:{port}", pki))
    transport.submit(push(pki.push.topic))
    [answer] = drain(transport, 1)
    transport.close()
    assert answer.error_kind is TransportError.CONNECTION, answer.error
    assert classify(answer).opens_breaker


def test_slow_answer_times_out(factory: Factory, pki: Pki, sim: SimulatorThread) -> None:
    sim.faults.latency_ms = 3000.0
    transport = factory(config_for(sim.url, pki, request_timeout_s=0.3))
    transport.submit(push(pki.push.topic))
    [answer] = drain(transport, 1)
    transport.close()
    assert answer.error_kind is TransportError.TIMEOUT, answer.error


def test_close_answers_in_flight_requests_as_closed(
    factory: Factory, pki: Pki, sim: SimulatorThread
) -> None:
    sim.faults.latency_ms = 3000.0
    transport = factory(config_for(sim.url, pki, max_concurrent_streams=10))
    requests = submit_many(transport, pki.push.topic, 30)  # 10 streams open, 20 queued
    transport.poll(0.2)
    answers = transport.close()
    assert_each_answered_once(requests, answers)
    assert {a.error_kind for a in answers} == {TransportError.CLOSED}
    assert transport.in_flight == 0
    with pytest.raises(RuntimeError):
        transport.submit(push(pki.push.topic))


def test_pycurl_takes_back_the_requests_it_has_not_written_yet(pki: Pki, sim: SimulatorThread
                                                              ) -> None:
    """A sender that finds it stalled (sender service.py `_stalled`) takes back what it had
    submitted and libcurl had not yet run: those pushes must never reach APNs."""
    transport = PycurlTransport(config_for(sim.url, pki))
    try:
        send_many(transport, pki.push.topic, 1)  # connected, the stream window open
        submitted = submit_many(transport, pki.push.topic, 20)
        taken = transport.unsend()
        assert [r.correlation_id for r in taken] == [r.correlation_id for r in submitted]
        assert transport.in_flight == 0
        send_many(transport, pki.push.topic, 5)  # the connection still works
        assert transport.unsend() == []  # written and answered: nothing to take back
        assert sim.snapshot().accepted == 6  # the 20 never reached the simulator
    finally:
        transport.close()
