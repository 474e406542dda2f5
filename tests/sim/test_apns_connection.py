"""The simulator's HTTP/2 layer on its own: `ApnsConnection` with a handler written here.

The connection is framing only and knows nothing of the simulator; these tests drive it through
its handler protocol alone (answers given later and out of order, a graceful drain), over plain
TCP with a raw h2 client, which the simulator's tests (TLS, its own fault policy) cannot show.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, ResponseReceived, StreamEnded

from services.sim.apns.connection import ApnsConnection, Headers

PUSH = [(":method", "POST"), (":scheme", "https"), (":authority", "sim"),
        (":path", "/3/device/" + "ab" * 32)]


class HeldHandler:
    """Keeps every request until the test answers it; records what the connection reports."""

    def __init__(self, drain_on_first: bool = False) -> None:
        self.drain_on_first = drain_on_first
        self.requests: list[tuple[ApnsConnection, int, bytes]] = []
        self.arrived = threading.Semaphore(0)
        self.opened = 0
        self.closed = threading.Event()

    def connection_opened(self, conn: ApnsConnection) -> None:
        self.opened += 1

    def connection_closed(self, conn: ApnsConnection) -> None:
        self.closed.set()

    def stream_refused(self, conn: ApnsConnection) -> None:
        raise AssertionError("no stream is over the limit in these tests")

    def request(self, conn: ApnsConnection, sid: int, headers: Headers, body: bytes) -> None:
        assert dict(headers)[b":path"].startswith(b"/3/device/")
        if self.drain_on_first and not conn.draining:
            conn.drain(sid)
        self.requests.append((conn, sid, body))
        self.arrived.release()


@dataclass
class Server:
    loop: asyncio.AbstractEventLoop
    port: int

    def answer(self, conn: ApnsConnection, sid: int, status: bytes, body: bytes) -> None:
        """Answer from outside the connection's read, as a delayed answer is."""
        self.loop.call_soon_threadsafe(conn.respond, sid, (status, b"id-%d" % sid, body))


@contextmanager
def serve(handler: HeldHandler) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(
        lambda: ApnsConnection(handler, max_concurrent_streams=10), "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Server(loop, server.sockets[0].getsockname()[1])
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class Client:
    sock: socket.socket
    h2: H2Connection = field(
        default_factory=lambda: H2Connection(H2Configuration(header_encoding=None)))
    status: dict[int, bytes] = field(default_factory=dict)
    apns_id: dict[int, bytes] = field(default_factory=dict)
    body: dict[int, bytes] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    goaway: ConnectionTerminated | None = None

    def send(self, *bodies: bytes) -> list[int]:
        """One request per body, written together."""
        sids = []
        for body in bodies:
            sid = self.h2.get_next_available_stream_id()
            self.h2.send_headers(sid, PUSH)
            self.h2.send_data(sid, body, end_stream=True)
            sids.append(sid)
        self.sock.sendall(self.h2.data_to_send())
        return sids

    def read_until(self, done: set[int], goaway: bool = False) -> None:
        while not (done <= self.ended and (self.goaway is not None or not goaway)):
            data = self.sock.recv(65536)
            if not data:
                break
            for ev in self.h2.receive_data(data):
                if isinstance(ev, ResponseReceived):
                    headers = dict(ev.headers)
                    self.status[ev.stream_id] = headers[b":status"]
                    self.apns_id[ev.stream_id] = headers[b"apns-id"]
                elif isinstance(ev, DataReceived):
                    self.body[ev.stream_id] = self.body.get(ev.stream_id, b"") + ev.data
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, StreamEnded):
                    self.ended.add(ev.stream_id)
                elif isinstance(ev, ConnectionTerminated):
                    self.goaway = ev
            self.sock.sendall(self.h2.data_to_send())


def connect(server: Server) -> Client:
    client = Client(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    client.h2.initiate_connection()
    client.sock.sendall(client.h2.data_to_send())
    return client


def wait_for(handler: HeldHandler, n: int) -> None:
    for _ in range(n):
        assert handler.arrived.acquire(timeout=10), "the handler did not get the request"


@pytest.fixture
def held() -> HeldHandler:
    return HeldHandler()


def test_answers_given_later_and_out_of_order_reach_their_streams(held: HeldHandler) -> None:
    with serve(held) as server:
        client = connect(server)
        sids = client.send(b"one", b"two", b"three")
        wait_for(held, 3)
        assert [(sid, body) for _, sid, body in held.requests] == list(
            zip(sids, [b"one", b"two", b"three"], strict=True))
        conn = held.requests[0][0]
        assert conn.peer.topic is None and conn.requests == 3 and held.opened == 1
        server.answer(conn, sids[2], b"410", b'{"reason":"Unregistered"}')
        server.answer(conn, sids[0], b"200", b"")
        server.answer(conn, sids[1], b"400", b'{"reason":"BadDeviceToken"}')
        client.read_until(set(sids))
        assert client.status == {sids[0]: b"200", sids[1]: b"400", sids[2]: b"410"}
        assert client.apns_id == {sid: b"id-%d" % sid for sid in sids}
        assert client.body == {sids[1]: b'{"reason":"BadDeviceToken"}',
                               sids[2]: b'{"reason":"Unregistered"}'}
        assert client.goaway is None
        client.sock.close()


def test_drain_answers_what_it_took_then_goaway_names_it() -> None:
    handler = HeldHandler(drain_on_first=True)
    with serve(handler) as server:
        client = connect(server)
        first, second = client.send(b"kept", b"left for a retry")
        wait_for(handler, 1)
        conn, sid, _ = handler.requests[0]
        assert sid == first and conn.draining
        server.answer(conn, first, b"200", b"")  # the GOAWAY waits for this answer
        client.read_until({first}, goaway=True)
        assert client.status == {first: b"200"} and second not in client.ended
        assert client.goaway is not None and client.goaway.last_stream_id == first
        assert len(handler.requests) == 1  # the stream after the drain was never handed over
        assert handler.closed.wait(10)  # and the connection closes
        client.sock.close()
