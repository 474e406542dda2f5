"""The gateway's credentials for `mdmpush up`: generated once, kept in the state directory.

The gateway refuses to start without credentials. `mdmpush up` writes a random API key and
webhook secret into files only the user can read (0600), and a principals file for the gateway
(`MDMPUSH_GATEWAY_PRINCIPALS_FILE`) that holds the key's SHA-256 digest, not the key: the key
itself stays in one file, for the operator and the MDM server. The webhook secret is in both,
because verifying an HMAC needs it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.common.principals import DIGEST_PREFIX, api_key_digest


@dataclass(frozen=True, slots=True)
class LocalCredentials:
    api_key_path: Path
    webhook_secret_path: Path
    principals_path: Path

    @property
    def api_key(self) -> str:
        return self.api_key_path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    """Create with mode 0600 from the start: the secret is never readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def _secret_file(path: Path) -> str:
    """The secret in `path`, created on first use; later runs keep it (clients keep working)."""
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def ensure_credentials(directory: Path, tenant: str) -> LocalCredentials:
    """API key, webhook secret and the gateway's principals file for one tenant, in
    `directory` (kept across runs; the principals file is rewritten from them each time)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    creds = LocalCredentials(directory / "api-key", directory / "webhook-secret",
                             directory / "gateway-principals.yaml")
    key = _secret_file(creds.api_key_path)
    webhook_secret = _secret_file(creds.webhook_secret_path)
    digest = DIGEST_PREFIX + api_key_digest(key).hex()
    config = {"principals": [{"name": f"{tenant}-local", "tenants": [tenant],
                              "api_keys": [digest], "webhook_secrets": [webhook_secret]}]}
    _write_private(creds.principals_path, yaml.safe_dump(config, sort_keys=False))
    return creds
