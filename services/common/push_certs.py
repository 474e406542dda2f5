"""What a mounted MDM push certificate says about itself: push topic, serial, validity, issuer.

Shared by the sender (which watches its certificate directory, see
services/sender/apns/certificates.py) and `mdmpush certs list`, which must work on a directory
without Kafka or the sender's HTTP stack.

Apple puts the push topic (``com.apple.mgmt.External.<uuid>``) in the subject's UID attribute;
APNs authorises a connection for exactly that topic, so the UID is the certificate's identity. A
certificate "renewed" in the Apple Push Certificates Portal keeps its UID; one "created" instead
gets a new UID, and every device enrolled under the old topic stops receiving pushes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from services.common.errors import MdmPushError

#: What a push topic may look like as a file name in the certificate directory.
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")

#: Apple's first reminder is 30 days before expiry; from then on a certificate is "expiring".
EXPIRING_DAYS = 30


class CertificateReadError(MdmPushError):
    """A certificate or key file that cannot be read as a push certificate (one line: why)."""


class CertificateStatus(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class PushCertificate:
    """The facts of one push certificate an operator needs to renew it in time."""

    #: The subject's UID (None: not an MDM push certificate).
    topic: str | None
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    #: The issuer's distinguished name (RFC 4514), e.g. "CN=Apple Application Integration 2 ...".
    issuer: str

    @property
    def serial_hex(self) -> str:
        """The serial as Apple's portal and `openssl x509 -serial` show it."""
        return format(self.serial, "X")

    def days_left(self, now: dt.datetime) -> float:
        """Days until expiry (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400

    def status(self, now: dt.datetime, expiring_days: float = EXPIRING_DAYS) -> CertificateStatus:
        left = self.days_left(now)
        if left <= 0:
            return CertificateStatus.EXPIRED
        if left <= expiring_days:
            return CertificateStatus.EXPIRING
        return CertificateStatus.OK


def valid_topic(topic: str) -> bool:
    """True if `topic` is safe as a file name in the certificate directory (events name topics:
    none may make a reader open another file)."""
    return bool(_TOPIC.fullmatch(topic)) and ".." not in topic


def enrolled_under(record: Mapping[str, Any]) -> str | None:
    """The push topic a DeviceRecord is enrolled under, None unless it is ENROLLED: what the
    enrollment counts per certificate count (the sender's census, `mdmpush certs list`)."""
    topic = record.get("topic")
    return topic if record.get("state") == "ENROLLED" and topic else None


def parse_certificate(pem: bytes, source: str = "certificate") -> PushCertificate:
    """The facts of the first certificate in `pem`; CertificateReadError if there is none."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateReadError(f"{source}: not a PEM certificate ({exc})") from exc
    return PushCertificate(
        topic=topic_of_certificate(cert),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
    )


def key_matches(cert_pem: bytes, key_pem: bytes, source: str = "key") -> bool:
    """True if the (unencrypted PEM) private key belongs to the certificate.

    A certificate and key replaced one after the other are briefly a mismatched pair; a client
    built from them fails its handshake, so the sender waits until both are the new ones."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateReadError(f"{source}: not an unencrypted PEM private key") from exc
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(der, spki)
    return bool(mine == cert.public_key().public_bytes(der, spki))


def read_certificate_file(path: Path) -> PushCertificate:
    """The facts of the certificate in `path` (CertificateReadError: unreadable, not PEM)."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise CertificateReadError(f"{path}: {exc.strerror}") from exc
    return parse_certificate(pem, str(path))


def topic_of_certificate(cert: x509.Certificate) -> str | None:
    """The push topic of a certificate: its subject's UID, or None when it has none."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()
