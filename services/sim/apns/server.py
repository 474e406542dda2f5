"""The APNs provider-API simulator: TLS listener, answers, store-and-forward, run modes.

:class:`ApnsSimulator` runs on an asyncio loop (``await sim.start()`` / ``await sim.stop()``);
:meth:`ApnsSimulator.run_in_thread` gives synchronous code (tests, benchmarks, the demo) a
simulator on its own thread and loop. Another process starts it with
``python -m services.sim.apns --port N --certs DIR`` (see ``__main__``).

The simulator is the request handler of its connections (:class:`~services.sim.apns.connection.
RequestHandler`): :mod:`connection` only speaks HTTP/2, and :meth:`ApnsSimulator.request` applies
the injected faults (:mod:`faults`: reset, 500/503, latency, GOAWAY after N streams) and keeps
the counters. The answer itself is decided in :meth:`ApnsSimulator.answer`, in APNs' order:
certificate (403), request shape (:mod:`services.sim.apns.request`), token state (410 / 400,
from the fault configuration then the device gateway), per-token rate (429), then 200 and
hand-off to the device, or storage when it is offline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from services.common.clock import Clock
from services.sim.apns.certs import SimPki
from services.sim.apns.connection import Answer, ApnsConnection, Headers, PeerIdentity
from services.sim.apns.faults import FaultDecision, Faults
from services.sim.apns.fleet_port import (
    AcceptAllGateway,
    AcceptedPush,
    DeviceGateway,
    TokenState,
)
from services.sim.apns.request import Rejection, validate
from services.sim.apns.stats import SimStats, StatsSnapshot
from services.sim.apns.store import PushStore

__all__ = ["ApnsSimulator", "SimulatorConfig", "SimulatorThread"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_OK = b"200"
_STATUS_BYTES = {code: str(code).encode() for code in (400, 403, 404, 405, 410, 413, 429, 500, 503)}
#: Apple keeps a push without apns-expiration for a while; 30 days is the documented maximum.
DEFAULT_STORAGE_S = 30 * 24 * 3600
PURGE_INTERVAL_S = 30.0
_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_apns_id() -> bytes:
    """A random (version 4) UUID, canonical form, as APNs makes up for a request without one.

    A third of ``str(uuid.uuid4()).encode()``'s cost, which showed on the 200 path.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}".encode()


@dataclass
class SimulatorConfig:
    """How to listen and which of APNs' policies to apply.

    ``client_auth="optional"`` exists only for load generators that cannot present a client
    certificate (h2load): such connections have no topic and any ``apns-topic`` is taken at face
    value. Real APNs, and every test, use ``"required"``.
    """

    server_cert: Path
    server_key: Path
    ca_cert: Path
    host: str = "127.0.0.1"
    port: int = 0
    client_auth: Literal["required", "optional"] = "required"
    max_concurrent_streams: int = 1000
    #: 429 TooManyRequests when a token gets more than this many pushes per window (None: off).
    token_rate_limit: int | None = None
    token_rate_window_s: float = 1.0
    #: Answer 400 BadDeviceToken for tokens the gateway does not know (default: accept + store).
    reject_unknown_tokens: bool = False
    #: Answer 400 InvalidPushType when apns-push-type is missing (default: infer it).
    require_push_type: bool = False
    #: Storage period for a push without apns-expiration.
    default_storage_s: int = DEFAULT_STORAGE_S
    #: Send apns-unique-id on 200 (APNs does so only in the development environment).
    send_unique_id: bool = False
    backlog: int = 1024
    clock: Clock = field(default_factory=Clock)

    @classmethod
    def from_pki(cls, pki: SimPki, **overrides: Any) -> SimulatorConfig:
        """A config using the server identity and CA of a test PKI (:func:`certs.make_pki`)."""
        return cls(
            server_cert=pki.server.cert_path,
            server_key=pki.server.key_path,
            ca_cert=pki.ca.cert_path,
            **overrides,
        )


class ApnsSimulator:
    """An APNs provider API on loopback. All methods but ``device_connected``/``stats`` belong
    to the loop thread; ``faults`` may be mutated from any thread (see :mod:`faults`)."""

    def __init__(
        self,
        config: SimulatorConfig,
        gateway: DeviceGateway | None = None,
        faults: Faults | None = None,
    ) -> None:
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the simulator only binds loopback addresses")
        self.config = config
        self.gateway: DeviceGateway = gateway if gateway is not None else AcceptAllGateway()
        self.faults = faults if faults is not None else Faults()
        self.clock = config.clock
        self.rng = random.Random(self.faults.seed)
        self._stats = SimStats()
        self.store = PushStore()
        self._rate: dict[str, list[float]] = {}
        self._connections: set[ApnsConnection] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._purge_timer: asyncio.TimerHandle | None = None
        self.port = config.port
        self._reason_bodies: dict[str, bytes] = {}

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("simulator not started")
        return self._loop

    @property
    def stats(self) -> SimStats:
        """Live counters (loop thread); other threads use :meth:`snapshot`."""
        return self._stats

    def ssl_context(self) -> ssl.SSLContext:
        """Server TLS: client certificate checked against the CA, ALPN h2 offered."""
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(cfg.server_cert), str(cfg.server_key))
        ctx.load_verify_locations(cafile=str(cfg.ca_cert))
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.client_auth == "required" else ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["h2"])
        return ctx

    async def start(self) -> None:
        """Listen on ``config.host:config.port`` (port 0: any free port, see :attr:`port`)."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: ApnsConnection(self, self.config.max_concurrent_streams,
                                   self.config.send_unique_id),
            host=self.config.host,
            port=self.config.port,
            ssl=self.ssl_context(),
            backlog=self.config.backlog,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._purge_timer = self._loop.call_later(PURGE_INTERVAL_S, self._purge)
        log.info("APNs simulator listening on %s:%d", self.config.host, self.port)

    def _purge(self) -> None:
        """Drop expired stored pushes now and then, so long runs keep bounded memory."""
        self.store.purge_expired(self.now())
        self._purge_timer = self.loop.call_later(PURGE_INTERVAL_S, self._purge)

    async def stop(self) -> None:
        """Stop listening, send GOAWAY on every connection and close them."""
        if self._purge_timer is not None:
            self._purge_timer.cancel()
            self._purge_timer = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._connections):
            conn.shutdown()
        for _ in range(100):  # bounded: wait up to 1 s for the transports to finish closing
            if not self._connections:
                break
            await asyncio.sleep(0.01)
        for conn in list(self._connections):
            conn.abort()

    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.port}"

    @classmethod
    def run_in_thread(
        cls,
        config: SimulatorConfig,
        gateway: DeviceGateway | None = None,
        faults: Faults | None = None,
    ) -> SimulatorThread:
        """Start a simulator on a background thread with its own loop; returns once listening."""
        handle = SimulatorThread(cls(config, gateway, faults))
        handle.start()
        return handle

    # -- the connections' request handler ----------------------------------------------------

    def connection_opened(self, conn: ApnsConnection) -> None:
        self._connections.add(conn)
        self._stats.connections_opened += 1
        self._stats.connections_open += 1

    def connection_closed(self, conn: ApnsConnection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self._stats.connections_open -= 1

    def stream_refused(self, conn: ApnsConnection) -> None:
        self._stats.refused_streams += 1

    def request(self, conn: ApnsConnection, sid: int, headers: Headers, body: bytes) -> None:
        """One request: the injected faults first, then APNs' answer, now or after the
        configured latency."""
        faults = self.faults
        if faults.any_share:
            fault = faults.decide(self.rng)
            if fault == "reset":
                self._stats.resets += 1
                conn.abort()
                return
            answer = self.fault_answer(headers, fault) if fault != "none" else None
        else:
            answer = None
        if answer is None:
            answer = self.answer(conn.peer, headers, body)
        limit = faults.goaway_after_streams
        if limit is not None and conn.requests >= limit and not conn.draining:
            self._stats.goaways += 1
            conn.drain(sid)
        delay = faults.delay_s(self.rng) if faults.latency_ms or faults.latency_jitter_ms else 0.0
        if delay > 0:
            self.loop.call_later(delay, conn.respond, sid, answer)
        else:
            conn.respond(sid, answer)

    def now(self) -> float:
        """The pipeline clock's time in epoch seconds (``config.clock``): store-and-forward's."""
        return self.clock.now_ms() / 1000

    # -- answers ----------------------------------------------------------------------------

    def _error(
        self, status: int, reason: str, apns_id: bytes | None, ts: int | None = None
    ) -> Answer:
        self._stats.answered(status, reason)
        if ts is None:
            body = self._reason_bodies.get(reason)
            if body is None:
                body = self._reason_bodies[reason] = json.dumps(
                    {"reason": reason}, separators=(",", ":")
                ).encode()
        else:
            body = json.dumps({"reason": reason, "timestamp": ts}, separators=(",", ":")).encode()
        return _STATUS_BYTES[status], apns_id or new_apns_id(), body

    def fault_answer(self, headers: Headers, fault: FaultDecision) -> Answer:
        """The answer for an injected 500/503 (echoing the request's apns-id)."""
        apns_id = next((v for k, v in headers if k == b"apns-id"), None)
        if fault == "500":
            return self._error(500, "InternalServerError", apns_id)
        return self._error(503, "ServiceUnavailable", apns_id)

    def answer(self, peer: PeerIdentity, headers: Headers, body: bytes) -> Answer:
        """Decide one request's answer and, for a 200, deliver or store the push."""
        faults = self.faults
        if (peer.serial is not None and peer.serial in faults.revoked_serials) or (
            peer.topic is not None and peer.topic in faults.revoked_topics
        ):
            apns_id = next((v for k, v in headers if k == b"apns-id"), None)
            return self._error(403, "BadCertificate", apns_id)

        req = validate(headers, body, peer.topic, require_push_type=self.config.require_push_type)
        if isinstance(req, Rejection):
            return self._error(req.status, req.reason, req.apns_id)

        token = req.token_hex
        forced = faults.unregistered_tokens.get(token) if faults.unregistered_tokens else None
        if forced is not None:
            return self._error(410, "Unregistered", req.apns_id, forced)
        status = self.gateway.token_status(token, req.topic)
        state = status.state
        if state is not TokenState.ACTIVE:
            if state is TokenState.UNREGISTERED:
                ts = status.unregistered_at_ms or self.clock.now_ms()
                return self._error(410, "Unregistered", req.apns_id, ts)
            if state is TokenState.OTHER_TOPIC:
                return self._error(400, "DeviceTokenNotForTopic", req.apns_id)
            if self.config.reject_unknown_tokens:
                return self._error(400, "BadDeviceToken", req.apns_id)

        limit = self.config.token_rate_limit
        if limit is not None and self._over_rate(token, time.monotonic(), limit):
            return self._error(429, "TooManyRequests", req.apns_id)

        now = self.clock.now_ms() / 1000

        apns_id = req.apns_id or new_apns_id()
        expiration = (
            req.expiration
            if req.expiration is not None
            else int(now) + self.config.default_storage_s
        )
        push = AcceptedPush(
            apns_id=apns_id.decode(),
            topic=req.topic,
            token_hex=token,
            payload=body,
            priority=req.priority,
            expiration=expiration,
            push_type=req.push_type,
            received_at=now,
            collapse_id=req.collapse_id,
        )
        self._stats.accepted_push(req.topic, token)
        connects = self.store.connects  # before deliver(): see _store_offline
        if not self.gateway.deliver(push) and expiration:
            self._store_offline(push, now, connects)
        return _OK, apns_id, b""

    def _store_offline(self, push: AcceptedPush, now: float, connects: int) -> None:
        """Store a push ``deliver`` refused, unless the device came online meanwhile.

        The fleet flips a device online and then calls :meth:`device_connected` on its own
        thread; if that happened between ``deliver`` saying offline and the store, the device
        took its stored push before this one was there. The store notices (``connects`` was read
        before ``deliver``) and this delivers again instead, until the push is delivered or
        stored with no connection in between.
        """
        store, gateway = self.store, self.gateway
        while not store.put_offline(push, now, connects):
            connects = store.connects
            if gateway.deliver(push):
                return

    def _over_rate(self, token: str, now: float, limit: int) -> bool:
        """Fixed window per token (real time): the (limit+1)-th push inside one window is
        refused."""
        window = self._rate.get(token)
        if window is None or now - window[0] >= self.config.token_rate_window_s:
            self._rate[token] = [now, 1.0]
            return False
        if window[1] >= limit:
            return True
        window[1] += 1
        return False

    # -- device side ------------------------------------------------------------------------

    def device_connected(self, token_hex: str) -> AcceptedPush | None:
        """A device came online: forward its stored push if it has not expired.

        Calls ``gateway.deliver`` on the calling thread and returns the forwarded push (None if
        nothing was stored, or it expired and was dropped). If the gateway still reports the
        device offline the push goes back into the store, unless a newer one arrived meanwhile.

        The gateway must report the device online (``deliver`` → True) before calling this: a
        push the simulator is handling concurrently is then either delivered directly or, if
        ``deliver`` looked just before, re-delivered by the simulator (see ``_store_offline``).
        """
        now = self.now()
        push = self.store.connected(token_hex.lower(), now)
        if push is not None and not self.gateway.deliver(push):
            self.store.put_back(push, now)
        return push

    def snapshot(self) -> StatsSnapshot:
        """Counters as of now; safe from any thread."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Start counting afresh (loop thread, or through :meth:`SimulatorThread.call`)."""
        opened = self._stats.connections_open
        self._stats = SimStats()
        self._stats.connections_open = opened


class SimulatorThread:
    """A simulator running on its own thread and loop, for synchronous callers.

    Use as a context manager or call :meth:`stop`. ``faults`` can be changed directly; use
    :meth:`call` for anything else that must run on the loop thread.
    """

    def __init__(self, sim: ApnsSimulator) -> None:
        self.sim = sim
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="apns-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.sim.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("APNs simulator did not start")
        if self._error is not None:
            raise RuntimeError("APNs simulator failed to start") from self._error

    @property
    def host(self) -> str:
        return self.sim.config.host

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def url(self) -> str:
        return self.sim.url

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the simulator's loop thread and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def snapshot(self) -> StatsSnapshot:
        return self.sim.snapshot()

    def device_connected(self, token_hex: str) -> AcceptedPush | None:
        return self.sim.device_connected(token_hex)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the simulator and its thread (idempotent)."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> SimulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
