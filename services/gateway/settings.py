"""Gateway configuration (`MDMPUSH_GATEWAY_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.principals import (
    PrincipalConfigError,
    Principals,
    load_principals,
    parse_principals,
)


class GatewaySettings(BaseSettings):
    """The gateway: listeners, credentials (services/common/principals.py), abuse bounds, TLS."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_GATEWAY_", frozen=True, extra="ignore")

    #: Address of the public listener (NanoMDM/MicroMDM webhook, check-ins, push API).
    host: str = "127.0.0.1"
    #: Port of the public listener.
    port: int = 9400
    #: Metrics, liveness and readiness: a port the ingress does not expose.
    ops_host: str = "127.0.0.1"
    #: Port of /metrics, /livez and /readyz.
    ops_port: int = 9100
    #: YAML/JSON credentials file (see services/common/principals.py), e.g. a mounted Secret.
    principals_file: Path | None = None
    #: The same configuration as text, for deployments that pass it in the environment.
    principals: SecretStr | None = None
    #: One principal for `default_tenant` from two plain variables (single-tenant deployments).
    #: API key (16+ chars) of that one principal: HTTP Basic password of the push API and /checkin.
    api_key: SecretStr | None = None
    #: Webhook HMAC secret (16+ chars) of that one principal (X-Hmac-Signature, as NanoMDM signs).
    webhook_secret: SecretStr | None = None
    #: The tenant of that one principal (in insecure development mode: of requests naming none).
    default_tenant: str = "default"
    #: Accept unauthenticated requests (local development only; logged loudly at start).
    insecure_dev: bool = False
    #: Per principal: requests per second (token bucket refill); over it -> 429 with Retry-After.
    rate_per_s: float = Field(default=50.0, gt=0)
    #: Per principal: how many requests may come at once (token bucket size).
    rate_burst: int = Field(default=100, ge=1)
    #: Largest request body accepted; larger -> 413.
    max_body_bytes: int = 1 << 20
    #: TLS on the public listener, for deployments without an ingress that terminates it.
    tls_cert_file: Path | None = None
    #: Private key of the TLS certificate (PEM); set both or neither.
    tls_key_file: Path | None = None

    def load_principals(self) -> Principals:
        """Every configured credential; PrincipalConfigError when unusable."""
        if self.principals_file is not None and self.principals is not None:
            raise PrincipalConfigError("set MDMPUSH_GATEWAY_PRINCIPALS_FILE or "
                                       "MDMPUSH_GATEWAY_PRINCIPALS, not both")
        inline = self.principals.get_secret_value() if self.principals else None
        configured = load_principals(self.principals_file, inline)
        if self.api_key is None and self.webhook_secret is None:
            return configured
        if len(configured):
            raise PrincipalConfigError("MDMPUSH_GATEWAY_API_KEY/WEBHOOK_SECRET and a principals "
                                       "config are exclusive")
        single: dict[str, object] = {"name": self.default_tenant,
                                     "tenants": [self.default_tenant]}
        if self.api_key is not None:
            single["api_keys"] = [self.api_key.get_secret_value()]
        if self.webhook_secret is not None:
            single["webhook_secrets"] = [self.webhook_secret.get_secret_value()]
        return parse_principals({"principals": [single]})
