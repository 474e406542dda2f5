"""APNs over libcurl (pycurl ``CurlMulti``): HTTP/2 multiplexing on one TLS connection.

Why libcurl: its HTTP/2 stack (nghttp2) runs in C, so the Python cost per push is three
``setopt`` calls and one ``info_read`` entry. Measured
against a C server this reaches well over 10,000 pushes/s on one core (see
``tests/bench/bench_transports.py``), an order of magnitude above httpx.

Speed rules followed here: Curl handles are created once and reused (TLS options are set only
at creation), ``CURLMOPT_MAX_HOST_CONNECTIONS=1`` + ``CURLOPT_PIPEWAIT`` keep every stream on the
one connection, and a body is only ever produced by error answers (APNs sends none with 200).
There is no header callback (a Python call per answer line): every request carries its own
``apns-id`` and APNs answers with that same value, so the answer's id is the request's. The
header lines are built once per (push type, topic, priority, expiration); only ``apns-id``
is new per request.

libcurl itself honours the server's SETTINGS_MAX_CONCURRENT_STREAMS (extra handles wait for a
free stream) and GOAWAY (streams the server did not process are retried on a new connection,
the rest complete); whatever cannot complete ends as an error answer, never silently. It does
not wait for the server's SETTINGS on a fresh connection, though, and would open hundreds of
streams against a limit it has not yet read (APNs starts low); so, like httpcore, a new
connection carries one request until its first answer, then the full window.
"""

from __future__ import annotations

import time
from collections import deque

import certifi
import pycurl

from services.sender.apns.transport import TransportConfig, parse_error_body
from services.sender.apns.types import ApnsRequest, ApnsResponse, TransportError

_MAX_ERROR_BODY = 4096
"""APNs error bodies are a few dozen bytes; anything beyond this is dropped, not buffered."""
_HEADER_SETS_KEPT = 256

_E_HTTP2_STREAM = 92  # CURLE_HTTP2_STREAM, not exported by pycurl
_CERTIFICATE_ERRORS = frozenset(
    {
        pycurl.E_SSL_CONNECT_ERROR,
        pycurl.E_SSL_CERTPROBLEM,
        pycurl.E_SSL_CIPHER,
        pycurl.E_PEER_FAILED_VERIFICATION,
        pycurl.E_SSL_CACERT_BADFILE,
        pycurl.E_SSL_CRL_BADFILE,
        pycurl.E_SSL_ISSUER_ERROR,
        pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
        pycurl.E_SSL_INVALIDCERTSTATUS,
        pycurl.E_SSL_ENGINE_NOTFOUND,
        pycurl.E_SSL_ENGINE_SETFAILED,
        98,  # CURLE_SSL_CLIENTCERT: the server rejected our certificate (TLS 1.3 alert)
    }
)

_RECONNECTING = frozenset(
    {TransportError.CONNECTION, TransportError.CERTIFICATE, TransportError.GOAWAY}
)
"""Errors after which libcurl opens a new connection, whose stream limit is not known yet."""


def transport_error_of(errno: int, message: str) -> TransportError:
    """Map a libcurl error code (and its message, for TLS alerts) to a ``TransportError``."""
    lowered = message.lower()
    if errno in _CERTIFICATE_ERRORS or "certificate" in lowered or "private key" in lowered:
        # TLS 1.3 delivers a rejected client certificate as an alert on the first read, and a
        # key that does not match the certificate is CURLE_BAD_FUNCTION_ARGUMENT: the message
        # is what tells them from other receive errors and argument errors.
        return TransportError.CERTIFICATE
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        return TransportError.TIMEOUT
    if "goaway" in lowered:
        return TransportError.GOAWAY
    if errno == _E_HTTP2_STREAM:
        return TransportError.STREAM
    return TransportError.CONNECTION


class _Slot:
    """A reusable Curl handle plus the state of the request it currently carries."""

    __slots__ = ("body", "body_size", "curl", "request", "started")

    def __init__(self, config: TransportConfig, ca_path: str) -> None:
        curl = pycurl.Curl()
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        curl.setopt(pycurl.PIPEWAIT, 1)
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.SSLCERT, str(config.cert_path))
        curl.setopt(pycurl.SSLCERTTYPE, "PEM")
        curl.setopt(pycurl.SSLKEY, str(config.key_path))
        curl.setopt(pycurl.SSLKEYTYPE, "PEM")
        curl.setopt(pycurl.CAINFO, ca_path)
        curl.setopt(pycurl.TIMEOUT_MS, int(config.request_timeout_s * 1000))
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(config.connect_timeout_s * 1000))
        # A connection idle longer than this is not reused but replaced, like APNs expects.
        curl.setopt(pycurl.MAXAGE_CONN, max(1, int(config.idle_timeout_s)))
        curl.setopt(pycurl.WRITEFUNCTION, self._on_body)
        self.curl = curl
        self.request: ApnsRequest | None = None
        self.started = 0.0
        self.body: list[bytes] = []
        self.body_size = 0

    def load(self, request: ApnsRequest, url: str, headers: list[str],
             started: float) -> pycurl.Curl:
        """Point the handle at a new request; only per-request options are touched."""
        self.request = request
        self.started = started
        if self.body:
            self.body.clear()
            self.body_size = 0
        curl = self.curl
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.HTTPHEADER, headers)
        curl.setopt(pycurl.POSTFIELDS, request.payload)
        return curl

    def _on_body(self, data: bytes) -> None:
        if self.body_size < _MAX_ERROR_BODY:
            self.body.append(data)
            self.body_size += len(data)


class PycurlTransport:
    """``ApnsTransport`` over one libcurl multi handle and one HTTP/2 connection."""

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._base_url = config.base_url.rstrip("/") + "/3/device/"
        self._ca_path = str(config.ca_path) if config.ca_path else certifi.where()
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, 1)
        multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, 1)
        multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, config.max_concurrent_streams)
        self._multi = multi
        # One request until the connection has proved itself (see module doc), then the window.
        self._window = 1
        self._free: list[_Slot] = []
        self._active: dict[pycurl.Curl, _Slot] = {}
        self._waiting: deque[tuple[ApnsRequest, float]] = deque()
        #: Handles added since libcurl last ran: nothing of theirs is written yet.
        self._fresh: list[pycurl.Curl] = []
        self._last_activity = time.monotonic()
        self._closed = False
        #: The header lines but apns-id, per (push type, topic, priority, expiration): a handful
        #: of combinations, bounded by the sender's (the simulator's tests send a few more).
        self._headers: dict[tuple[str, str, int, int], list[str]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._active) + len(self._waiting)

    @property
    def last_activity(self) -> float:
        return self._last_activity

    def submit(self, request: ApnsRequest) -> None:
        """Hand the request to libcurl, or queue it while our stream window is full."""
        if self._closed:
            raise RuntimeError("transport is closed")
        now = time.monotonic()
        self._last_activity = now
        if len(self._active) < self._window:
            self._start(request, now)
        else:
            self._waiting.append((request, now))

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        """Run libcurl, wait up to ``timeout_s`` if nothing completed; returns at once if idle."""
        multi = self._multi
        self._perform()
        done = self._collect()
        if not done and timeout_s > 0 and self._active:
            curl_wait_ms = multi.timeout()
            wait_s = timeout_s if curl_wait_ms < 0 else min(timeout_s, curl_wait_ms / 1000)
            multi.select(wait_s)
            self._perform()
            done = self._collect()
        return done

    def _perform(self) -> None:
        """Let libcurl write and read: the fresh handles are on their way from here."""
        self._fresh.clear()
        multi = self._multi
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass

    def close(self) -> list[ApnsResponse]:
        """Abort everything in flight (answered as CLOSED errors) and release libcurl."""
        if self._closed:
            return []
        self._closed = True
        now = time.monotonic()
        aborted = []
        for curl, slot in self._active.items():
            self._multi.remove_handle(curl)
            if slot.request is not None:
                aborted.append(_closed_error(slot.request, slot.started, now))
            curl.close()
        aborted.extend(_closed_error(request, started, now) for request, started in self._waiting)
        self._active.clear()
        self._waiting.clear()
        self._fresh.clear()
        for slot in self._free:
            slot.curl.close()
        self._free.clear()
        self._multi.close()
        return aborted

    def unsend(self) -> list[ApnsRequest]:
        """The requests libcurl has not run since they were added, and those queued behind the
        stream window: removed before a byte of theirs is written."""
        taken = []
        for curl in self._fresh:
            slot = self._active.pop(curl)
            self._multi.remove_handle(curl)
            if slot.request is not None:
                taken.append(slot.request)
            slot.request = None
            self._free.append(slot)
        self._fresh.clear()
        taken.extend(request for request, _ in self._waiting)
        self._waiting.clear()
        return taken

    def _start(self, request: ApnsRequest, started: float) -> None:
        slot = self._free.pop() if self._free else _Slot(self._config, self._ca_path)
        key = (request.push_type, request.topic, request.priority, request.expiration)
        common = self._headers.get(key)
        if common is None:
            if len(self._headers) >= _HEADER_SETS_KEPT:
                self._headers.clear()
            common = self._headers[key] = [
                "apns-push-type: " + request.push_type,
                "apns-topic: " + request.topic,
                f"apns-priority: {request.priority}",
                f"apns-expiration: {request.expiration}",
                "content-type: application/json",
                "accept:",
            ]
        curl = slot.load(request, self._base_url + request.token_hex,
                         [*common, "apns-id: " + request.apns_id], started)
        self._active[curl] = slot
        self._multi.add_handle(curl)
        self._fresh.append(curl)

    def _collect(self) -> list[ApnsResponse]:
        done: list[ApnsResponse] = []
        multi = self._multi
        now = time.monotonic()
        while True:
            queued, succeeded, failed = multi.info_read()
            for curl in succeeded:
                done.append(self._finish(curl, 0, "", now))
            for curl, errno, message in failed:
                done.append(self._finish(curl, errno, message, now))
            if not queued:
                break
        if done:
            self._last_activity = now
        return done

    def _finish(self, curl: pycurl.Curl, errno: int, message: str, now: float) -> ApnsResponse:
        slot = self._active.pop(curl)
        self._multi.remove_handle(curl)
        request = slot.request
        assert request is not None  # every active slot carries a request
        latency_ms = (now - slot.started) * 1000
        if errno:
            response = ApnsResponse(
                correlation_id=request.correlation_id,
                apns_id=request.apns_id,
                status=None,
                reason=None,
                latency_ms=latency_ms,
                error_kind=transport_error_of(errno, message),
                error=f"curl {errno}: {message}",
            )
        else:
            status = curl.getinfo(pycurl.RESPONSE_CODE)
            reason = timestamp = None
            if status != 200 and slot.body:
                reason, timestamp = parse_error_body(b"".join(slot.body))
            response = ApnsResponse(
                correlation_id=request.correlation_id,
                apns_id=request.apns_id,
                status=status,
                reason=reason,
                latency_ms=latency_ms,
                timestamp_ms=timestamp,
            )
        slot.request = None
        self._free.append(slot)
        if response.status is not None:
            self._window = self._config.max_concurrent_streams
        elif response.error_kind in _RECONNECTING:
            self._window = 1
        while self._waiting and len(self._active) < self._window:
            self._start(*self._waiting.popleft())
        return response


def _closed_error(request: ApnsRequest, started: float, now: float) -> ApnsResponse:
    return ApnsResponse(
        correlation_id=request.correlation_id,
        apns_id=request.apns_id,
        status=None,
        reason=None,
        latency_ms=(now - started) * 1000,
        error_kind=TransportError.CLOSED,
        error="transport closed with the request in flight",
    )
