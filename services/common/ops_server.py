"""The ops port of a Kafka worker: /metrics, /livez and /readyz on one small HTTP server.

Kubernetes restarts a pod whose /livez fails and sends no work to one whose /readyz fails
(deploy/k8s/base probes both). /livez answers from a heartbeat the main loop stamps once per
iteration: a loop wedged in a call that never returns stops stamping, and the pod is restarted.
/readyz answers from a callable the service owns (Kafka clients connected, partitions held).

The server runs in a daemon thread (`ThreadingHTTPServer`), apart from the loop it watches: a
busy loop must not make the probes time out, and a probe costs the loop nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic_settings import BaseSettings, SettingsConfigDict

#: What /readyz asks: None when ready, else why not (shown to whoever probes).
ReadyCheck = Callable[[], str | None]


class OpsSettings(BaseSettings):
    """Settings of the ops port shared by the fan-out, the sender and the correlator."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_OPS_")

    #: Seconds without a main-loop heartbeat after which /livez answers 503 (the pod is then
    #: restarted). Longer than the longest legitimate pause of a loop (a start-up replay stamps
    #: as it reads, a rebalance callback does not).
    liveness_stale_s: float = 30.0


class Heartbeat:
    """The main loop's sign of life: `beat()` once per iteration (one clock read, one write)."""

    def __init__(self, stale_after_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self._monotonic = monotonic
        self.last = monotonic()

    def beat(self) -> None:
        self.last = self._monotonic()

    def stale(self) -> str | None:
        """None while fresh, else how long the loop has been silent."""
        age = self._monotonic() - self.last
        if age > self.stale_after_s:
            return f"main loop silent for {age:.1f} s (limit {self.stale_after_s:.1f} s)"
        return None


class OpsServer:
    """/metrics of `registry`, /livez of `heartbeat`, /readyz of `ready`, on `port`."""

    def __init__(self, port: int, heartbeat: Heartbeat, ready: ReadyCheck,
                 registry: CollectorRegistry = REGISTRY, host: str = "0.0.0.0") -> None:
        handler = _handler(heartbeat, ready, registry)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-server",
                                        daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(heartbeat: Heartbeat, ready: ReadyCheck,
             registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                self._verdict(heartbeat.stale())
            elif path == "/readyz":
                try:
                    reason = ready()
                except Exception as exc:  # a check that fails says not ready, never 500
                    reason = f"readiness check failed: {exc}"
                self._verdict(reason)
            else:
                self._send(404, b'{"ok": false, "reason": "not found"}', "application/json")

        def _verdict(self, reason: str | None) -> None:
            body = {"ok": True} if reason is None else {"ok": False, "reason": reason}
            self._send(200 if reason is None else 503, json.dumps(body).encode(),
                       "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds are not worth a log line each."""

    return Handler
