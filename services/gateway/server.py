"""Run the gateway: the public listener (optionally TLS) and the ops listener, in one event loop.

`Gateway.start()` is what `python -m services.gateway` and the tests run, so the tests exercise
the same start-up checks (credentials, TLS files) as production.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.log import server_logger

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.errors import MdmPushError
from services.common.principals import PrincipalConfigError
from services.common.serde import AvroSerde
from services.gateway.app import MAX_REQUEST_LINE, create_app
from services.gateway.auth import Authenticator
from services.gateway.ops import Readiness, create_ops_app
from services.gateway.producer import AsyncProducer
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


class StartupRefused(MdmPushError):
    """The gateway will not start with this configuration; `str()` says what to fix."""


class UnparseableHttpFilter(logging.Filter):
    """aiohttp logs a full traceback, quoting up to 100 bytes of the offending line (a header
    value may be a credential), for every request it cannot parse as HTTP: any client could fill
    the log with them. One warning line naming the error class instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadHttpMessage):
            record.msg, record.args = "refused a request that is not valid HTTP (%s)", (
                type(error).__name__,)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_UNPARSEABLE = UnparseableHttpFilter()


def authenticator(settings: GatewaySettings) -> Authenticator:
    """The configured credentials; refuses to run open unless the development flag is set."""
    try:
        principals = settings.load_principals()
    except PrincipalConfigError as exc:
        raise StartupRefused(str(exc)) from None
    if len(principals):
        if settings.insecure_dev:
            log.warning("MDMPUSH_GATEWAY_INSECURE_DEV ignored: credentials are configured")
        return Authenticator(principals, insecure_dev=False,
                             default_tenant=settings.default_tenant)
    if not settings.insecure_dev:
        raise StartupRefused(
            "no credentials configured: set MDMPUSH_GATEWAY_PRINCIPALS_FILE (or "
            "MDMPUSH_GATEWAY_PRINCIPALS, or MDMPUSH_GATEWAY_API_KEY/WEBHOOK_SECRET); "
            "MDMPUSH_GATEWAY_INSECURE_DEV=1 runs without authentication, for local development")
    log.warning("*" * 72)
    log.warning("INSECURE: MDMPUSH_GATEWAY_INSECURE_DEV is set and no credentials are "
                "configured. Anyone who reaches port %d can push and forge check-ins for any "
                "tenant. Never run this way outside local development.", settings.port)
    log.warning("*" * 72)
    return Authenticator(principals, insecure_dev=True, default_tenant=settings.default_tenant)


def tls_context(settings: GatewaySettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise StartupRefused("TLS needs both MDMPUSH_GATEWAY_TLS_CERT_FILE and _KEY_FILE")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise StartupRefused(f"TLS certificate/key not usable: {exc}") from None
    return context


@dataclass
class Gateway:
    settings: GatewaySettings
    producer: AsyncProducer
    topics: Topics
    serde: AvroSerde
    clock: Clock
    readiness: Readiness = field(default_factory=Readiness)
    _runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self) -> tuple[int, int]:
        """Listen; returns the (public, ops) ports actually bound (settings may say 0)."""
        settings = self.settings
        auth, tls = authenticator(settings), tls_context(settings)
        if _UNPARSEABLE not in server_logger.filters:
            server_logger.addFilter(_UNPARSEABLE)
        app = create_app(settings, self.producer, self.topics, self.serde, self.clock, auth)
        app.router.add_get("/readyz", self.readiness.handle)
        public = web.AppRunner(app, access_log=None, max_line_size=MAX_REQUEST_LINE,
                               max_field_size=16 * 1024)
        ops = web.AppRunner(create_ops_app(self.readiness), access_log=None)
        self._runners = [public, ops]
        await public.setup()
        await ops.setup()
        await web.TCPSite(public, settings.host, settings.port, ssl_context=tls).start()
        await web.TCPSite(ops, settings.ops_host, settings.ops_port).start()
        self.readiness.ready = True
        ports = (public.addresses[0][1], ops.addresses[0][1])
        log.info("gateway listening on %s:%d (%s), ops on %s:%d", settings.host, ports[0],
                 "TLS" if tls else "plain HTTP", settings.ops_host, ports[1])
        return ports

    async def stop(self) -> None:
        self.readiness.ready = False
        for runner in self._runners:
            await runner.cleanup()
