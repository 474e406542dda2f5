"""Who may publish for which tenant: principals, their credentials, and how they are checked.

A principal is one MDM server (or an operator). Its credentials are API keys (HTTP Basic password
of the push API and /checkin) and webhook secrets (HMAC-SHA256 of the webhook body). Several of
each may be active at once so they can be rotated without downtime.

The tenant of everything a principal publishes is the principal's tenant. A principal listing
several tenants (an operator) must name the one it acts for; a single-tenant principal may not name
another. Webhook secrets are single-tenant only: NanoMDM signs the body alone, so the secret itself
must decide the tenant, or a captured signed body could be replayed under another tenant.

API keys are kept only as SHA-256 digests (the file may hold `sha256:<hex>` instead of the key)
and compared in constant time over every configured digest. Webhook secrets must stay in memory as
they are, because verifying an HMAC needs the key.

Configuration (YAML or JSON, from a mounted file or an environment variable):

    principals:
      - name: acme-nanomdm          # recorded on every request/event it publishes
        tenants: [acme]
        api_keys: ["<key, 16+ chars>", "sha256:<64 hex>"]
        webhook_secrets: ["<secret, 16+ chars>"]
      - name: ops
        tenants: [acme, globex]     # may act for either, with ?tenant=
        api_keys: ["sha256:<64 hex>"]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.common.errors import MdmPushError
from services.common.limits import InvalidInput, check_tenant

MIN_SECRET_LEN = 16
DIGEST_PREFIX = "sha256:"


class PrincipalConfigError(MdmPushError):
    """The credentials configuration is unusable; `str()` says what to fix."""


class NotAllowed(MdmPushError):
    """An authenticated principal asked to act for a tenant it does not serve."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    tenants: tuple[str, ...]

    @property
    def operator(self) -> bool:
        return len(self.tenants) > 1

    def tenant_for(self, requested: str | None) -> str:
        """The tenant a request acts for: the principal's own, or the one an operator names."""
        if requested is None:
            if self.operator:
                raise NotAllowed(f"principal {self.name} serves several tenants: name one "
                                 "with ?tenant=")
            return self.tenants[0]
        if requested not in self.tenants:
            raise NotAllowed(f"principal {self.name} may not act for tenant {requested!r}")
        return requested


def api_key_digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def hmac_signature(body: bytes, secret: bytes) -> str:
    """What a webhook sender puts in X-Hmac-Signature: base64(HMAC-SHA256(secret, body))."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


class Principals:
    """The configured principals, and lookups by credential (constant time per credential)."""

    def __init__(self, entries: Iterable[tuple[Principal, Sequence[bytes], Sequence[bytes]]]):
        """entries: (principal, API key SHA-256 digests, webhook secrets)."""
        self._keys: list[tuple[bytes, Principal]] = []
        self._secrets: list[tuple[bytes, Principal]] = []
        names: set[str] = set()
        for principal, digests, secrets in entries:
            if principal.name in names:
                raise PrincipalConfigError(f"principal {principal.name!r} is configured twice")
            names.add(principal.name)
            self._keys += [(d, principal) for d in digests]
            self._secrets += [(s, principal) for s in secrets]
        digests_seen = [d for d, _ in self._keys]
        if len(set(digests_seen)) != len(digests_seen):
            raise PrincipalConfigError("one API key is configured for two principals")

    def __len__(self) -> int:
        return len(self._keys) + len(self._secrets)

    def by_api_key(self, presented: bytes) -> Principal | None:
        digest = api_key_digest(presented)
        found: Principal | None = None
        for known, principal in self._keys:  # no early exit: time does not depend on position
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    def by_webhook_signature(self, body: bytes, signature_b64: str | None) -> Principal | None:
        """The principal whose secret signed `body`, or None (missing, malformed or wrong)."""
        if not signature_b64:
            return None
        try:
            presented = base64.b64decode(signature_b64.strip(), validate=True)
        except (binascii.Error, ValueError):  # non-ASCII or not base64: a wrong signature
            return None
        found: Principal | None = None
        for secret, principal in self._secrets:
            if hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), presented):
                found = principal
        return found


def _secret_list(name: str, field: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PrincipalConfigError(f"principal {name}: {field} must be a list of strings")
    return list(value)


def _key_digest(name: str, key: str) -> bytes:
    if key.startswith(DIGEST_PREFIX):
        try:
            digest = bytes.fromhex(key[len(DIGEST_PREFIX):])
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise PrincipalConfigError(f"principal {name}: {DIGEST_PREFIX} needs 64 hex digits")
        return digest
    _check_secret(name, "api key", key)
    return api_key_digest(key)


def _check_secret(name: str, what: str, value: str) -> None:
    if len(value.strip()) < MIN_SECRET_LEN:
        raise PrincipalConfigError(f"principal {name}: an empty or short {what} is refused "
                                   f"(at least {MIN_SECRET_LEN} characters)")


def parse_principals(config: Any) -> Principals:
    """Validate a parsed configuration (see the module docstring) into Principals."""
    if not isinstance(config, Mapping) or not isinstance(config.get("principals"), list):
        raise PrincipalConfigError("credentials config needs a top-level 'principals' list")
    entries = []
    for raw in config["principals"]:
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise PrincipalConfigError("every principal needs a name")
        name = raw["name"]
        tenants = raw.get("tenants")
        if not isinstance(tenants, list) or not tenants:
            raise PrincipalConfigError(f"principal {name}: tenants must be a non-empty list")
        try:
            checked = tuple(check_tenant(t) for t in tenants)
        except InvalidInput as exc:
            raise PrincipalConfigError(f"principal {name}: {exc}") from None
        keys = _secret_list(name, "api_keys", raw.get("api_keys"))
        secrets = _secret_list(name, "webhook_secrets", raw.get("webhook_secrets"))
        if not keys and not secrets:
            raise PrincipalConfigError(f"principal {name}: no api_keys or webhook_secrets")
        if secrets and len(checked) > 1:
            raise PrincipalConfigError(
                f"principal {name}: webhook secrets must belong to one tenant (the signature "
                "covers only the body, so the secret has to decide the tenant)")
        for secret in secrets:
            _check_secret(name, "webhook secret", secret)
        entries.append((Principal(name, checked), [_key_digest(name, k) for k in keys],
                        [s.encode() for s in secrets]))
    return Principals(entries)


def load_principals(path: Path | None, inline: str | None) -> Principals:
    """From a mounted YAML/JSON file, or from the text of an environment variable."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise PrincipalConfigError(f"cannot read credentials file {path}: {exc}") from exc
    elif inline is not None:
        text = inline
    else:
        return Principals([])
    try:
        config = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError:  # its message quotes the text, which holds secrets
        raise PrincipalConfigError("credentials config is not valid YAML/JSON") from None
    return parse_principals(config)
