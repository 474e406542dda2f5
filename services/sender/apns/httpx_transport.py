"""APNs over httpx[http2], run by an asyncio loop on a private thread.

httpx is the pure-Python alternative to the libcurl transport: easier to debug, and needing no
native libcurl, but 20 to 40 times slower per push (see ``tests/bench/bench_transports.py``). The
sender's loop is synchronous, so the event loop lives on its own daemon thread: ``submit``
appends to a queue and wakes the loop at most once per batch, answers come back through a
thread-safe queue that ``poll`` drains.

httpcore (under httpx) honours the server's SETTINGS_MAX_CONCURRENT_STREAMS itself; our
semaphore bounds how many requests we hand it at once. A stream refused by GOAWAY surfaces as
``RemoteProtocolError(ConnectionTerminated)`` and comes back as a GOAWAY error to retry; the
next request opens a new connection. Known limit (httpcore): when the server hangs up after
its GOAWAY while we are still writing, every stream still open fails with a write error, even
some the server had answered; they come back as CONNECTION errors, so the retry may repeat a
push APNs already accepted (a duplicate wake-up, never a loss). libcurl has no such gap.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
import time
from collections import deque

import httpx

from services.sender.apns.transport import TransportConfig, parse_error_body, request_headers
from services.sender.apns.types import ApnsRequest, ApnsResponse, TransportError

_CLOSE_WAIT_S = 5.0
"""How long ``close`` waits for the loop thread to cancel requests and close the connection."""


def transport_error_of(exc: BaseException) -> TransportError:
    """Map an httpx/httpcore exception (and its TLS cause) to a ``TransportError``."""
    if isinstance(exc, httpx.TimeoutException):
        return TransportError.TIMEOUT
    text = f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}"
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE" in text.upper():
        return TransportError.CERTIFICATE
    if "ConnectionTerminated" in text:
        return TransportError.GOAWAY
    if "StreamReset" in text:
        return TransportError.STREAM
    return TransportError.CONNECTION


def _ssl_context(config: TransportConfig) -> ssl.SSLContext:
    """TLS with our client certificate; HTTP/2 negotiated by ALPN as APNs requires."""
    context = ssl.create_default_context(cafile=str(config.ca_path) if config.ca_path else None)
    context.load_cert_chain(str(config.cert_path), str(config.key_path))
    return context


class HttpxTransport:
    """``ApnsTransport`` over one ``httpx.AsyncClient`` (HTTP/2, one connection)."""

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._base_url = config.base_url.rstrip("/")
        self._results: queue.SimpleQueue[ApnsResponse] = queue.SimpleQueue()
        self._incoming: deque[tuple[ApnsRequest, float]] = deque()
        self._wakeup_pending = False
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_activity = time.monotonic()
        self._closed = False
        # A certificate that cannot be loaded fails every request as CERTIFICATE (the breaker
        # then pauses this certificate), the way libcurl reports it, instead of raising here.
        self._certificate_error: str | None = None
        try:
            self._ssl_context = _ssl_context(config)
        except (OSError, ssl.SSLError) as exc:
            self._certificate_error = f"{type(exc).__name__}: {exc}"
            self._ssl_context = ssl.create_default_context()  # never used to connect
        self._loop = asyncio.new_event_loop()
        self._tasks: dict[asyncio.Task[None], tuple[ApnsRequest, float]] = {}
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="apns-httpx", daemon=True
        )
        self._thread.start()
        ready.wait()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def last_activity(self) -> float:
        return self._last_activity

    def submit(self, request: ApnsRequest) -> None:
        """Queue the request for the loop thread, waking it once per batch."""
        if self._closed:
            raise RuntimeError("transport is closed")
        now = time.monotonic()
        self._last_activity = now
        self._in_flight += 1
        if self._certificate_error is not None:
            kind = TransportError.CERTIFICATE
            self._results.put(_error(request, now, kind, self._certificate_error))
            return
        self._incoming.append((request, now))
        with self._lock:
            if self._wakeup_pending:
                return
            self._wakeup_pending = True
        self._loop.call_soon_threadsafe(self._start_incoming)

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        """Return completed requests, waiting up to ``timeout_s`` for the first one."""
        done: list[ApnsResponse] = []
        results = self._results
        try:
            if timeout_s > 0 and self._in_flight:
                done.append(results.get(timeout=timeout_s))
            while True:
                done.append(results.get_nowait())
        except queue.Empty:
            pass
        if done:
            self._in_flight -= len(done)
            self._last_activity = time.monotonic()
        return done

    def close(self) -> list[ApnsResponse]:
        """Cancel what is in flight (answered as CLOSED errors), close the client and thread."""
        if self._closed:
            return []
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=_CLOSE_WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CLOSE_WAIT_S)
        return self.poll(0)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        config = self._config
        self._client = httpx.AsyncClient(
            http1=False,
            http2=True,
            verify=self._ssl_context,
            limits=httpx.Limits(
                max_connections=1,
                max_keepalive_connections=1,
                keepalive_expiry=config.idle_timeout_s,
            ),
            timeout=httpx.Timeout(config.request_timeout_s, connect=config.connect_timeout_s),
        )
        self._semaphore = asyncio.Semaphore(config.max_concurrent_streams)
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def unsend(self) -> list[ApnsRequest]:
        """The requests the loop thread has not picked up yet (each is taken by one side: a
        deque's popleft is atomic); those it has may already be on the wire."""
        taken = []
        while True:
            try:
                taken.append(self._incoming.popleft()[0])
            except IndexError:
                break
        self._in_flight -= len(taken)
        return taken

    def _start_incoming(self) -> None:
        with self._lock:
            self._wakeup_pending = False
        incoming = self._incoming
        while incoming:
            request, started = incoming.popleft()
            task = self._loop.create_task(self._send(request, started))
            self._tasks[task] = (request, started)
            task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        request, started = self._tasks.pop(task)
        if task.cancelled():
            # Also covers a task cancelled before it ever ran: its answer is still owed.
            self._results.put(_error(request, started, TransportError.CLOSED, "closed"))

    async def _send(self, request: ApnsRequest, started: float) -> None:
        try:
            async with self._semaphore:
                answer = await self._client.post(
                    f"{self._base_url}/3/device/{request.token_hex}",
                    content=request.payload,
                    headers=request_headers(request),
                )
        except Exception as exc:
            self._results.put(
                _error(request, started, transport_error_of(exc), f"{type(exc).__name__}: {exc}")
            )
            return
        reason = timestamp = None
        if answer.status_code != 200:
            reason, timestamp = parse_error_body(answer.content)
        self._results.put(
            ApnsResponse(
                correlation_id=request.correlation_id,
                apns_id=answer.headers.get("apns-id", request.apns_id),
                status=answer.status_code,
                reason=reason,
                latency_ms=(time.monotonic() - started) * 1000,
                timestamp_ms=timestamp,
            )
        )

    async def _shutdown(self) -> None:
        # Requests submitted but not yet started still count: answer them as CLOSED too.
        while self._incoming:
            request, started = self._incoming.popleft()
            self._results.put(_error(request, started, TransportError.CLOSED, "closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()


def _error(
    request: ApnsRequest, started: float, kind: TransportError, message: str
) -> ApnsResponse:
    return ApnsResponse(
        correlation_id=request.correlation_id,
        apns_id=request.apns_id,
        status=None,
        reason=None,
        latency_ms=(time.monotonic() - started) * 1000,
        error_kind=kind,
        error=message,
    )
