"""The simulator's HTTP/2 at frame level, through a raw h2 client on a TLS socket.

httpx hides frames; these checks need them: a 200 is HEADERS+END_STREAM with no DATA frame,
SETTINGS carries MAX_CONCURRENT_STREAMS, GOAWAY names the last processed stream, a client
without ALPN still speaks HTTP/2, and flow control works in both directions.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes

from services.sim.apns.certs import PushCertFiles, SimPki, make_pki
from services.sim.apns.faults import Faults
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread

TOKEN = "ab" * 32
BODY = b'{"mdm":"magic"}'


@dataclass
class Response:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data_frames: int = 0
    body: bytes = b""
    headers_ended_stream: bool = False
    complete: bool = False


def connect(sim: SimulatorThread, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS socket to the simulator with a 10 s timeout, so a silent server fails the test."""
    raw = socket.create_connection((sim.host, sim.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=sim.host)


def push_headers(topic: str | None) -> list[tuple[str, str]]:
    """The headers of one MDM push to TOKEN; no topic lets the simulator take the certificate's."""
    hdrs = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.push.apple.com"),
        (":path", f"/3/device/{TOKEN}"),
        ("apns-push-type", "mdm"),
    ]
    if topic:
        hdrs.append(("apns-topic", topic))
    return hdrs


class RawClient:
    """A blocking HTTP/2 client that records frames per stream (bounded reads, 10 s timeout)."""

    def __init__(
        self,
        sim: SimulatorThread,
        ctx: ssl.SSLContext,
        receive_window: int | None = None,
    ) -> None:
        self.sock = connect(sim, ctx)
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if receive_window is not None:
            self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: receive_window})
        self.responses: dict[int, Response] = {}
        self.settings: dict[int, int] = {}
        self.terminated: ConnectionTerminated | None = None
        self.ack_data = receive_window is None
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, body: bytes = BODY, topic: str | None = None, **headers: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        hdrs = push_headers(topic)
        hdrs.extend((k.replace("_", "-"), v) for k, v in headers.items())
        self.conn.send_headers(sid, hdrs)
        while self.conn.local_flow_control_window(sid) < len(body):
            self.pump()
        self.conn.send_data(sid, body, end_stream=True)
        self.responses[sid] = Response()
        self._flush()
        return sid

    def pump(self) -> list[Event]:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by server")
        events = self.conn.receive_data(data)
        for ev in events:
            if isinstance(ev, ResponseReceived):
                r = self.responses[ev.stream_id]
                r.headers = dict(ev.headers)
                r.headers_ended_stream = ev.stream_ended is not None
            elif isinstance(ev, DataReceived):
                r = self.responses[ev.stream_id]
                r.data_frames += 1
                r.body += ev.data
                if self.ack_data:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, StreamEnded):
                self.responses[ev.stream_id].complete = True
            elif isinstance(ev, RemoteSettingsChanged):
                for code, change in ev.changed_settings.items():
                    self.settings[int(code)] = change.new_value
            elif isinstance(ev, ConnectionTerminated):
                self.terminated = ev
        self._flush()
        return events

    def wait(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Pump until ``done()`` is true, the connection ends, or the timeout."""
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            try:
                self.pump()
            except ConnectionError:
                return

    def answer(self, sid: int) -> Response:
        """Stream ``sid``'s response once it ended (or as far as it got within the timeout)."""
        self.wait(lambda: self.responses[sid].complete)
        return self.responses[sid]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cert(pki: SimPki) -> PushCertFiles:
    return pki.issue()


@pytest.fixture
def sim(pki: SimPki) -> Iterator[SimulatorThread]:
    config = SimulatorConfig.from_pki(pki, max_concurrent_streams=123)
    with ApnsSimulator.run_in_thread(config, faults=Faults()) as handle:
        yield handle


@pytest.fixture
def client(pki: SimPki, cert: PushCertFiles, sim: SimulatorThread) -> Iterator[RawClient]:
    """A client with the push certificate and ALPN h2, closed even when the test fails."""
    raw = RawClient(sim, pki.client_context(cert))
    yield raw
    raw.close()


def test_200_is_headers_with_end_stream_and_no_data_frame(
    cert: PushCertFiles, client: RawClient
) -> None:
    sid = client.request(topic=cert.topic, apns_id="0a0b0c0d-0000-4000-8000-000000000001")
    r = client.answer(sid)
    assert r.headers[b":status"] == b"200"
    assert r.headers[b"apns-id"] == b"0a0b0c0d-0000-4000-8000-000000000001"
    assert r.headers_ended_stream and r.data_frames == 0


def test_error_is_headers_then_json_data(cert: PushCertFiles, client: RawClient) -> None:
    r = client.answer(client.request(topic=cert.topic, apns_priority="2"))
    assert r.headers[b":status"] == b"400"
    assert json.loads(r.body) == {"reason": "BadPriority"}


def test_advertises_max_concurrent_streams(client: RawClient) -> None:
    client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.settings)
    assert client.settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 123


def test_default_max_concurrent_streams_is_apples_1000(pki: SimPki, cert: PushCertFiles) -> None:
    with ApnsSimulator.run_in_thread(SimulatorConfig.from_pki(pki)) as sim:
        client = RawClient(sim, pki.client_context(cert))
        client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.settings)
        assert client.settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 1000
        client.close()


def test_client_without_alpn_is_served_http2(
    pki: SimPki, cert: PushCertFiles, sim: SimulatorThread
) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert_path))
    ctx.load_cert_chain(str(cert.cert_path), str(cert.key_path))  # and no ALPN, like aioapns
    client = RawClient(sim, ctx)
    assert client.sock.selected_alpn_protocol() is None
    assert client.answer(client.request(topic=cert.topic)).headers[b":status"] == b"200"
    client.close()


def test_goaway_after_n_streams_names_the_last_processed_stream(
    cert: PushCertFiles, sim: SimulatorThread, client: RawClient
) -> None:
    sim.faults.goaway_after_streams = 3
    sids = [client.request(topic=cert.topic) for _ in range(5)]
    client.wait(lambda: client.terminated is not None)
    assert client.terminated is not None
    assert client.terminated.last_stream_id == sids[2]
    assert client.terminated.additional_data == b'{"reason":"Shutdown"}'
    assert [client.responses[s].headers.get(b":status") for s in sids[:3]] == [b"200"] * 3
    assert all(not client.responses[s].headers for s in sids[3:])  # not processed: retry them
    assert sim.snapshot().accepted == 3


def test_error_bodies_wait_for_the_clients_flow_control_window(
    pki: SimPki, cert: PushCertFiles, sim: SimulatorThread
) -> None:
    client = RawClient(sim, pki.client_context(cert), receive_window=10)
    client.wait(lambda: SettingCodes.MAX_CONCURRENT_STREAMS in client.settings)
    sid = client.request(topic=cert.topic, apns_priority="2")
    client.wait(lambda: bool(client.responses[sid].headers), timeout=5)
    r = client.responses[sid]
    assert r.headers[b":status"] == b"400" and not r.complete  # body parked: window too small
    client.conn.increment_flow_control_window(1000, stream_id=sid)
    client.conn.increment_flow_control_window(1000)
    client._flush()
    assert json.loads(client.answer(sid).body) == {"reason": "BadPriority"}
    client.close()


def test_burst_larger_than_the_receive_window(
    cert: PushCertFiles, sim: SimulatorThread, client: RawClient
) -> None:
    """~20 MB of 4 KB payloads on one connection: WINDOW_UPDATEs keep it flowing."""
    body = json.dumps({"mdm": "m" * 4000}).encode()
    sids: list[int] = []
    for _ in range(5000):
        while sum(1 for s in sids[-123:] if not client.responses[s].complete) >= 120:
            client.pump()
        sids.append(client.request(body, topic=cert.topic))
    client.wait(lambda: all(client.responses[s].complete for s in sids), timeout=60)
    assert all(client.responses[s].headers[b":status"] == b"200" for s in sids)
    assert sim.snapshot().accepted == 5000


def test_goaway_waits_for_delayed_answers(
    cert: PushCertFiles, sim: SimulatorThread, client: RawClient
) -> None:
    sim.faults.goaway_after_streams = 2
    sim.faults.latency_ms = 100
    sids = [client.request(topic=cert.topic) for _ in range(4)]
    client.wait(lambda: client.terminated is not None)
    assert client.terminated is not None and client.terminated.last_stream_id == sids[1]
    assert [client.responses[s].complete for s in sids] == [True, True, False, False]


def test_streams_over_the_limit_are_refused_and_the_connection_lives(pki: SimPki) -> None:
    """A client that opens streams before reading SETTINGS (libcurl does) and exceeds
    MAX_CONCURRENT_STREAMS: only the extra streams get RST_STREAM(REFUSED_STREAM)."""
    config = SimulatorConfig.from_pki(pki, max_concurrent_streams=3)
    cert = pki.issue()
    with ApnsSimulator.run_in_thread(config) as sim:
        client = RawClient(sim, pki.client_context(cert))
        conn = client.conn
        hdrs = push_headers(cert.topic)
        # Every HEADERS first (no END_STREAM: all five are open at once whatever the TCP
        # segmentation), then the bodies, all before reading anything from the server.
        sids = [conn.get_next_available_stream_id() + 2 * i for i in range(5)]
        for sid in sids:
            conn.send_headers(sid, hdrs)
            client.responses[sid] = Response()
        for sid in sids:
            conn.send_data(sid, BODY, end_stream=True)
        client._flush()
        resets: dict[int, int] = {}

        def pump_resets() -> bool:
            return len(resets) == 2 and all(client.responses[s].complete for s in sids[:3])

        deadline = time.monotonic() + 10
        while not pump_resets() and time.monotonic() < deadline:
            for ev in client.pump():
                if isinstance(ev, StreamReset):
                    resets[ev.stream_id] = ev.error_code
        assert resets == {sids[3]: ErrorCodes.REFUSED_STREAM, sids[4]: ErrorCodes.REFUSED_STREAM}
        assert [client.responses[s].headers[b":status"] for s in sids[:3]] == [b"200"] * 3
        assert client.terminated is None

        # The connection is still usable, now within the limit.
        assert client.answer(client.request(topic=cert.topic)).headers[b":status"] == b"200"
        assert client.terminated is None
        snap = sim.snapshot()
        assert snap.accepted == 4 and snap.refused_streams == 2
        client.close()


def test_ping_is_acknowledged_with_its_payload(client: RawClient) -> None:
    client.conn.ping(b"12345678")
    client._flush()
    acks: list[bytes] = []
    deadline = time.monotonic() + 10
    while not acks and time.monotonic() < deadline:
        acks += [ev.ping_data for ev in client.pump() if isinstance(ev, PingAckReceived)]
    assert acks == [b"12345678"]


def test_header_block_over_continuation_frames_padding_and_priority(
    cert: PushCertFiles, client: RawClient
) -> None:
    """A 20 kB header block (HEADERS + CONTINUATION), a PRIORITY flag, a padded DATA frame."""
    conn = client.conn
    sid = conn.get_next_available_stream_id()
    hdrs = [*push_headers(cert.topic), ("x-filler", "f" * 20000)]
    conn.send_headers(sid, hdrs, priority_weight=200)
    conn.send_data(sid, BODY, end_stream=True, pad_length=17)
    client.responses[sid] = Response()
    client._flush()
    assert client.answer(sid).headers[b":status"] == b"200"


def test_answers_honour_the_clients_header_table_size(
    cert: PushCertFiles, client: RawClient
) -> None:
    """With HEADER_TABLE_SIZE 0 the next answer starts with a table size update, else the
    client's HPACK decoder (h2's) refuses it."""
    client.conn.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
    client._flush()
    sids = [client.request(topic=cert.topic) for _ in range(2)]
    client.wait(lambda: all(client.responses[s].complete for s in sids))
    assert [client.responses[s].headers[b":status"] for s in sids] == [b"200", b"200"]
    assert client.terminated is None


def read_goaway(sock: ssl.SSLSocket) -> ConnectionTerminated | None:
    conn = H2Connection(H2Configuration(client_side=True))
    conn.initiate_connection()  # only to parse what the server sends
    sock.settimeout(10)
    while True:
        data = sock.recv(65536)
        if not data:
            return None
        for ev in conn.receive_data(data):
            if isinstance(ev, ConnectionTerminated):
                return ev


def test_bad_preface_gets_goaway_protocol_error(
    pki: SimPki, cert: PushCertFiles, sim: SimulatorThread
) -> None:
    sock = connect(sim, pki.client_context(cert))
    sock.sendall(b"POST /3/device/x HTTP/1.1\r\nHost: x\r\n\r\n")
    ev = read_goaway(sock)
    assert ev is not None and ev.error_code == ErrorCodes.PROTOCOL_ERROR
    sock.close()


def test_undecodable_header_block_gets_goaway_compression_error(
    pki: SimPki, cert: PushCertFiles, sim: SimulatorThread
) -> None:
    sock = connect(sim, pki.client_context(cert))
    conn = H2Connection(H2Configuration(client_side=True))
    conn.initiate_connection()
    block = b"\xff\xff\xff\x7f"  # indexed field far beyond any table
    headers_frame = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    sock.sendall(conn.data_to_send() + headers_frame)
    ev = read_goaway(sock)
    assert ev is not None and ev.error_code == ErrorCodes.COMPRESSION_ERROR
    sock.close()
