"""Test PKI for the APNs simulator: a CA, a loopback server certificate, and MDM push certificates.

Real Apple MDM push certificates carry the push topic (``com.apple.mgmt.External.<uuid>``) in
the subject's UID attribute (OID 0.9.2342.19200300.100.1.1); APNs authorises a connection for
exactly that topic. The simulator reads the topic the same way, so any client that works against
these certificates handles real ones too. Keys are ECDSA P-256 because handshakes are cheap,
which matters when tests and benchmarks open many connections.

Every function writes PEM files into a directory and returns their paths, because both clients
(httpx, aioapns, pycurl, h2load) and the simulator in another process load certificates by path.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "PushCertFiles",
    "ServerCertFiles",
    "SimPki",
    "issue_push_certificate",
    "load_ca",
    "make_ca",
    "make_pki",
    "make_server_cert",
    "mdm_topic",
    "topic_of_certificate",
    "write_combined_pem",
]

#: The subject attribute Apple uses for the push topic (``UID``, RFC 4519 ``userid``).
UID_OID = NameOID.USER_ID

_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA in memory (to sign) plus the path of its certificate (for clients to trust)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class ServerCertFiles:
    """The simulator's TLS identity."""

    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class PushCertFiles:
    """A provider (MDM server) push certificate, its key, and the topic it authorises.

    ``combined_path`` holds certificate and key in one PEM, which is what aioapns and many MDM
    servers expect.
    """

    cert_path: Path
    key_path: Path
    combined_path: Path
    topic: str
    serial: int


def mdm_topic() -> str:
    """A fresh topic shaped like Apple's MDM push topics."""
    return f"com.apple.mgmt.External.{uuid.uuid4()}"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(directory: str | Path, common_name: str = "mdmpush test CA") -> CertificateAuthority:
    """Create a self-signed CA and write ``ca.pem`` / ``ca.key`` into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = _write(d / _CA_CERT, _cert_pem(cert))
    key_path = _write(d / _CA_KEY, _key_pem(key), private=True)
    return CertificateAuthority(cert=cert, key=key, cert_path=cert_path, key_path=key_path)


def load_ca(directory: str | Path) -> CertificateAuthority:
    """Load a CA written by :func:`make_ca`, so another process can issue more certificates."""
    d = Path(directory)
    cert = x509.load_pem_x509_certificate((d / _CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((d / _CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key is not an EC key")
    return CertificateAuthority(cert=cert, key=key, cert_path=d / _CA_CERT, key_path=d / _CA_KEY)


def _leaf_builder(
    ca: CertificateAuthority,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )


def make_server_cert(
    ca: CertificateAuthority, directory: str | Path, name: str = "server"
) -> ServerCertFiles:
    """Issue the simulator's certificate, valid for ``127.0.0.1`` and ``localhost``.

    Writes ``<name>.pem`` and ``<name>.key``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    now = _now()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        _leaf_builder(ca, subject, key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return ServerCertFiles(
        cert_path=_write(d / f"{name}.pem", _cert_pem(cert)),
        key_path=_write(d / f"{name}.key", _key_pem(key), private=True),
    )


def issue_push_certificate(
    ca: CertificateAuthority,
    topic: str,
    directory: str | Path,
    *,
    name: str | None = None,
    expired: bool = False,
    valid_days: int = 365,
) -> PushCertFiles:
    """Issue an MDM push certificate for ``topic`` (placed in the subject's UID, like Apple's).

    ``expired=True`` yields a certificate whose validity ended yesterday: the simulator's TLS
    handshake rejects it, as APNs does. To simulate a *revoked* certificate, issue a normal one
    and give its ``serial`` (or its topic) to the simulator's fault configuration
    (``revoked_serials`` / ``revoked_topics``): requests on it are answered 403 BadCertificate.

    Files: ``<name>.pem`` (certificate), ``<name>.key`` (key), ``<name>.combined.pem`` (both);
    ``name`` defaults to the topic.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key()
    now = _now()
    if expired:
        not_before, not_after = now - dt.timedelta(days=400), now - dt.timedelta(days=1)
    else:
        not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=valid_days)
    subject = x509.Name(
        [
            x509.NameAttribute(UID_OID, topic),
            # Apple's CN is "APSP:<uuid>"; X.509 caps a CN at 64 characters.
            x509.NameAttribute(NameOID.COMMON_NAME, f"APSP:{topic.rsplit('.', 1)[-1]}"[:64]),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )
    cert = (
        _leaf_builder(ca, subject, key, not_before, not_after)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    stem = name or topic
    cert_pem, key_pem = _cert_pem(cert), _key_pem(key)
    return PushCertFiles(
        cert_path=_write(d / f"{stem}.pem", cert_pem),
        key_path=_write(d / f"{stem}.key", key_pem, private=True),
        combined_path=write_combined_pem(d / f"{stem}.combined.pem", cert_pem, key_pem),
        topic=topic,
        serial=cert.serial_number,
    )


def write_combined_pem(path: Path, cert_pem: bytes, key_pem: bytes) -> Path:
    """Write certificate + key into one PEM file (the format aioapns and MDM servers load)."""
    return _write(path, cert_pem + key_pem, private=True)


def topic_of_certificate(cert: x509.Certificate) -> str | None:
    """The push topic of a certificate: its subject's UID, or ``None`` when it has none."""
    attrs = cert.subject.get_attributes_for_oid(UID_OID)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


@dataclass(frozen=True, slots=True)
class SimPki:
    """Everything a test needs around the simulator: CA, server identity, push certificates.

    One call (:func:`make_pki`) instead of the same four lines in every test module.
    """

    directory: Path
    ca: CertificateAuthority
    server: ServerCertFiles

    def issue(
        self, topic: str | None = None, *, name: str | None = None, expired: bool = False
    ) -> PushCertFiles:
        """A push certificate for ``topic`` (a fresh MDM topic when omitted)."""
        return issue_push_certificate(
            self.ca, topic or mdm_topic(), self.directory, name=name, expired=expired
        )

    def client_context(self, push: PushCertFiles | None = None) -> ssl.SSLContext:
        """A client TLS context trusting the test CA, presenting ``push``, offering ALPN h2."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_path))
        if push is not None:
            ctx.load_cert_chain(str(push.cert_path), str(push.key_path))
        ctx.set_alpn_protocols(["h2"])
        return ctx


def make_pki(directory: str | Path) -> SimPki:
    """Create a CA and the simulator's server certificate in ``directory``."""
    d = Path(directory)
    ca = make_ca(d)
    return SimPki(directory=d, ca=ca, server=make_server_cert(ca, d))
