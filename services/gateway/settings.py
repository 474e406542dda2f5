"""Gateway configuration (`MDMPUSH_GATEWAY_*`)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_GATEWAY_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 9400
    #: Tenant given to webhook events and push-API requests that name none (`?tenant=`).
    default_tenant: str = "default"
    #: Shared secret of the webhook's X-Hmac-Signature; unset accepts unsigned events.
    webhook_secret: SecretStr | None = None
    #: NanoMDM-style API key for /v1/push (HTTP basic auth, user `nanomdm`); unset = no auth.
    api_key: SecretStr | None = None
    max_body_bytes: int = 1 << 20
