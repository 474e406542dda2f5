"""One APNs client per (endpoint, certificate, lane), built on demand from mounted certificates.

APNs authorises a TLS connection for the topic of the client certificate, so a sender that owns
several certificates needs one connection per certificate (and per endpoint: production and
sandbox). Priority pushes get a connection of their own: on the bulk connection they would wait
behind every bulk stream already queued at the server (hundreds, when a backlog drains), which
no scheduling on our side can overtake. The pool opens a client on first use, keeps it open
while it is busy, closes it after ``idle_timeout_s`` without traffic (APNs drops idle
connections anyway), and merges every client's completions into one ``poll``.

Certificates come from a ``CertificateStore`` (apns/certificates.py: the mounted files, renewals
and refused replacements). ``poll`` asks it every ``reload_s`` what changed on disk; a renewed
certificate's clients are retired: they take no new request, their requests in flight finish,
then they close, while new requests open a client with the new files. No restart, no lost push.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from services.sender.apns.certificates import CertificateStore, UnknownCertificateError
from services.sender.apns.httpx_transport import HttpxTransport
from services.sender.apns.pycurl_transport import PycurlTransport
from services.sender.apns.transport import ApnsTransport, TransportConfig
from services.sender.apns.types import ApnsRequest, ApnsResponse
from services.sender.job import Lane

#: The pool's failure for a topic without a usable certificate is part of its interface (the
#: sender's loop and its fakes catch it from here).
__all__ = ["ApnsPool", "CertificateStore", "ClientPool", "UnknownCertificateError"]

TransportFactory = Callable[[TransportConfig], ApnsTransport]

TRANSPORTS: dict[str, TransportFactory] = {"pycurl": PycurlTransport, "httpx": HttpxTransport}

ClientKey = tuple[str, str, Lane]
"""(endpoint base URL, certificate topic, connection lane: PRIORITY or BULK — priority pushes never
share a connection with bulk ones, due retries go on the bulk one)"""

DEFAULT_TRANSPORT = "pycurl"
"""libcurl wins by far. tests/bench/bench_transports.py (one connection, one process, h2o on a
shared 2-core machine, medians of 3 runs): 1,000 streams: pycurl 14,200 (runs 9,800-21,500)
vs httpx 620 pushes/s, 23x; 200 streams: pycurl 26,300 (16,200-32,100) vs httpx 700, 38x."""

class ApnsPool(Protocol):
    """What the sender's loop needs from its APNs clients (ClientPool; a fake in unit tests)."""

    def submit(
        self, request: ApnsRequest, base_url: str | None = None, *, lane: Lane = Lane.BULK
    ) -> None:
        """Send on the client of (endpoint, request.topic, lane); raises
        ``UnknownCertificateError`` before anything is sent if the topic has no certificate."""
        ...

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        """Completions of all clients, waiting up to ``timeout_s`` if none are ready."""
        ...

    def in_flight_for(self, topic: str, lane: Lane = Lane.BULK, base_url: str | None = None) -> int:
        """Requests in flight on the client of (endpoint, topic, lane)."""
        ...

    def close(self) -> list[ApnsResponse]:
        """Close every client; requests still in flight come back as CLOSED errors."""
        ...

    def unsend(self) -> list[ApnsRequest]:
        """Take back every request not yet written to its connection (never sent, never
        answered)."""
        ...


class ClientPool:
    """Transports keyed by (endpoint base URL, certificate topic, lane), with idle closing.

    ``poll`` spreads its wait over the open clients (one, usually: a sender owns the
    partitions of few certificates) and closes those idle for ``idle_timeout_s``.
    """

    def __init__(
        self,
        store: CertificateStore,
        base_url: str,
        *,
        transport: str = DEFAULT_TRANSPORT,
        ca_path: Path | None = None,
        max_concurrent_streams: int = 1000,
        request_timeout_s: float = 15.0,
        idle_timeout_s: float = 60.0,
        reload_s: float = 5.0,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {transport!r}; choose from {sorted(TRANSPORTS)}")
        self._store = store
        self._base_url = base_url
        self._factory = TRANSPORTS[transport]
        self._ca_path = ca_path
        self._max_concurrent_streams = max_concurrent_streams
        self._request_timeout_s = request_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._reload_s = reload_s
        self._next_reload = time.monotonic() + reload_s
        self._clients: dict[ClientKey, ApnsTransport] = {}
        #: Clients of a replaced certificate: no new request, closed once their last answers.
        self._retiring: list[tuple[ClientKey, ApnsTransport]] = []
        #: Clients that have had an HTTP answer (a connection that works).
        self._warm: set[ClientKey] = set()

    @property
    def in_flight(self) -> int:
        return (sum(client.in_flight for client in self._clients.values())
                + sum(client.in_flight for _, client in self._retiring))

    def in_flight_for(self, topic: str, lane: Lane = Lane.BULK, base_url: str | None = None) -> int:
        """Requests in flight on the client(s) of (endpoint, topic, lane), a retiring one too."""
        key = (base_url or self._base_url, topic, lane)
        client = self._clients.get(key)
        retiring = sum(c.in_flight for k, c in self._retiring if k == key)
        return retiring + (0 if client is None else client.in_flight)

    @property
    def open_clients(self) -> list[ClientKey]:
        """(endpoint, topic, lane) of every open client."""
        return list(self._clients)

    def submit(
        self, request: ApnsRequest, base_url: str | None = None, *, lane: Lane = Lane.BULK
    ) -> None:
        """Send on the client of (endpoint, request.topic, lane), opening it if needed.

        Raises ``UnknownCertificateError`` before anything is sent if the topic has no
        certificate here.
        """
        key = (base_url or self._base_url, request.topic, lane)
        client = self._clients.get(key)
        if client is not None and lane is Lane.PRIORITY and key not in self._warm:
            # Still connecting (a TLS handshake, then one stream until the server's first
            # answer): meanwhile the bulk connection, if it is up, is the faster way.
            bulk = self._clients.get((key[0], key[1], Lane.BULK))
            if bulk is not None and (key[0], key[1], Lane.BULK) in self._warm:
                client = bulk
        if client is None:
            client = self._clients[key] = self._open(key[0], key[1])
            if lane is Lane.PRIORITY:  # polled first, see poll()
                self._clients = {k: self._clients[k] for k in sorted(
                    self._clients, key=lambda k: k[2] is not Lane.PRIORITY)}
        client.submit(request)

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        """Completions of all clients; waits up to ``timeout_s`` in total if none are ready.

        Priority clients come first in the pool, so their answers are never left waiting
        while a bulk client's wait runs out."""
        now = time.monotonic()
        if now >= self._next_reload:
            self._next_reload = now + self._reload_s
            for topic in self._store.refresh():
                self._retire(topic)
        done: list[ApnsResponse] = []
        clients = [*self._clients.items(), *self._retiring]
        for key, client in clients:
            self._collect(key, client, client.poll(0), done)
        busy = [item for item in clients if item[1].in_flight]
        if not done and busy and timeout_s > 0:
            share = timeout_s / len(busy)
            for key, client in busy:
                self._collect(key, client, client.poll(share), done)
                if done:
                    break
        self._close_idle()
        return done

    def _retire(self, topic: str) -> None:
        """The certificate of `topic` changed: its clients take no new request."""
        for key in [k for k in self._clients if k[1] == topic]:
            client = self._clients.pop(key)
            self._warm.discard(key)
            if client.in_flight:
                self._retiring.append((key, client))
            else:
                client.close()

    def _collect(self, key: ClientKey, client: ApnsTransport, answers: list[ApnsResponse],
                 done: list[ApnsResponse]) -> None:
        # A retiring client's answers do not warm the key: it now names the new client.
        if (answers and key not in self._warm and self._clients.get(key) is client
                and any(a.status is not None for a in answers)):
            self._warm.add(key)
        done.extend(answers)

    def unsend(self) -> list[ApnsRequest]:
        taken: list[ApnsRequest] = []
        for client in [*self._clients.values(), *(c for _, c in self._retiring)]:
            taken.extend(client.unsend())
        return taken

    def close(self) -> list[ApnsResponse]:
        """Close every client and the store; requests in flight come back as CLOSED errors."""
        aborted: list[ApnsResponse] = []
        for client in [*self._clients.values(), *(c for _, c in self._retiring)]:
            aborted.extend(client.close())
        self._clients.clear()
        self._retiring.clear()
        self._warm.clear()
        self._store.close()
        return aborted

    def _open(self, base_url: str, topic: str) -> ApnsTransport:
        files = self._store.files_for(topic)
        return self._factory(
            TransportConfig(
                base_url=base_url,
                cert_path=files.cert_path,
                key_path=files.key_path,
                ca_path=self._ca_path,
                max_concurrent_streams=self._max_concurrent_streams,
                request_timeout_s=self._request_timeout_s,
                idle_timeout_s=self._idle_timeout_s,
            )
        )

    def _close_idle(self) -> None:
        for retired in [item for item in self._retiring if not item[1].in_flight]:
            self._retiring.remove(retired)
            retired[1].close()
        now = time.monotonic()
        idle = [
            key
            for key, client in self._clients.items()
            if not client.in_flight and now - client.last_activity >= self._idle_timeout_s
        ]
        for key in idle:
            # Nothing is in flight, so close() has nothing to hand back.
            self._clients.pop(key).close()
            self._warm.discard(key)
