"""The sender's own configuration (`MDMPUSH_SENDER_*`); Kafka settings stay in `MDMPUSH_KAFKA_*`.

Defaults are production's (Apple's endpoint, 60 s breaker and idle close as classic MDM servers
used); tests and the simulator override `base_url`, `ca_path` and the short timings.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.catalogue import DEFAULT_RETRY_DELAYS_MS
from services.sender.apns.pool import DEFAULT_TRANSPORT
from services.sender.apns.transport import Environment, apns_base_url


class SenderSettings(BaseSettings):
    """Where to push, how hard, and how to retry; the policy topic may override the rates."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_SENDER_", frozen=True, extra="ignore")

    #: Mounted push certificates: `<topic>.pem` + `<topic>.key` (see apns/certificates.py).
    cert_dir: Path = Path("/etc/mdmpush/certs")
    #: How often the certificate files are looked at again: a renewed one is used from then on,
    #: one of another topic (created instead of renewed) is refused (docs/runbooks.md).
    cert_reload_s: float = Field(default=5.0, gt=0)
    #: How often the enrollments per certificate are recounted from the registry topic (read on
    #: a thread of its own); 0 = not counted (the enrollment gauges stay absent).
    enrollment_count_s: float = Field(default=60.0, ge=0)
    #: CA bundle to verify the APNs server with; None = system trust store (real APNs).
    ca_path: Path | None = None
    #: Apple's APNs environment: "production" (api.push.apple.com) or "sandbox" (development).
    environment: Literal["production", "sandbox"] = "production"
    #: 443, or 2197 where 443 is blocked.
    port: int = 443
    #: Explicit base URL (the simulator, a test endpoint); overrides environment and port.
    base_url: str | None = None
    #: HTTP/2 client behind the transport interface: "pycurl" (default, fastest) or "httpx".
    transport: str = DEFAULT_TRANSPORT
    #: HTTP/2 streams open at once per APNs connection (APNs allows about 1,000).
    max_concurrent_streams: int = 1000
    #: An APNs request not answered in this long fails as a transient connection error.
    request_timeout_s: float = 15.0
    #: Close a certificate's connection after this long without traffic.
    idle_close_s: float = 60.0
    #: Pause a certificate this long after a certificate or connection error.
    breaker_s: float = 60.0
    #: One retry topic per delay, shortest first; the n-th failure goes to the n-th tier.
    retry_delays_ms: tuple[int, ...] = DEFAULT_RETRY_DELAYS_MS
    #: Used when no policy (neither the certificate's nor '*') is on the config topic.
    default_max_attempts: int = 5
    #: Priority-lane pushes per minute per certificate when no policy applies; 0 = unthrottled.
    default_priority_per_minute: float = 0.0
    #: Bulk-lane pushes per minute per certificate when no policy applies; 0 = unthrottled.
    default_bulk_per_minute: float = 0.0
    #: Consumer group of the senders; instances in one group share the jobs partitions.
    group_id: str = "mdmpush-sender"
    #: This instance's name in client ids and logs (the host name, i.e. the pod name).
    instance_id: str = Field(default_factory=socket.gethostname)
    #: Requests in flight to APNs at most; `priority_reserve` of them are kept for priority jobs.
    #: Kept at about one connection's stream limit: more would only queue inside the transport,
    #: in FIFO order, where a priority push would wait behind the bulk ones.
    max_in_flight: int = 1000
    #: Of `max_in_flight`, slots only priority jobs may use, so bulk never starves a user action.
    priority_reserve: int = 100
    #: Bulk and retry requests in flight per certificate at most. Whatever is in flight waits
    #: in the server's queue, which a priority push on its own connection still shares (the
    #: server's CPU): by Little's law 300 carry 10,000 pushes/s at up to 30 ms a request,
    #: while 900 put ~0.5 s of queue before a priority push (bench_priority.py).
    bulk_in_flight_per_certificate: int = 300
    #: The unrecorded window: pushes made whose outcome Kafka has not yet acknowledged (the
    #: requests on the wire, the answers whose records are in the producer's linger or on their
    #: way to the broker; a RETRYING / DEAD_LETTERED job until a commit covers it) are kept
    #: under max(unrecorded_min, unrecorded_share x the larger of the jobs outstanding on the
    #: sender's partitions and its pushes of the last minute, backlog.py). A SIGKILL, or a stall
    #: that loses the partitions, repeats at most that many pushes (with `skip_already_sent`;
    #: offsets.py, docs/bounds.md): never more than `unrecorded_share` of what was left to do or
    #: of the last minute's pushes, or `unrecorded_min`. A window carries window / (APNs round
    #: trip + produce round trip) pushes/s. 0 = no window (then only `max_in_flight` bounds what
    #: a crash repeats).
    unrecorded_min: int = Field(default=20, ge=0)
    #: See `unrecorded_min`: the window's share of the jobs outstanding or of the last minute's
    #: pushes (0: the floor alone).
    unrecorded_share: float = Field(default=0.01, ge=0.0, le=1.0)
    #: Jobs buffered per partition before that partition is paused (back-pressure).
    buffer_per_partition: int = 2000
    #: Records taken from the consumer's queue per loop turn: all of it, usually (see Sender).
    consume_batch: int = 5000
    #: Prometheus port; 0 disables the endpoint.
    metrics_port: int = 9102
    #: How long SIGTERM waits for in-flight requests and their produces.
    shutdown_timeout_s: float = 20.0
    #: How often the member count of the group is refreshed (PER_INSTANCE scope).
    members_refresh_s: float = 15.0
    #: At assignment, read the outcomes the partitions' previous owner wrote after its last
    #: commit and skip those jobs instead of pushing them again (see already_sent.py).
    skip_already_sent: bool = True

    def endpoint(self) -> str:
        """The APNs base URL this sender pushes to."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return apns_base_url(Environment(self.environment), self.port)
