"""`mdmpush certs list [DIR] [--enrollments]`: the push certificates of a directory, and when
each expires.

Reads the files only (no Kafka, no sender): an operator can run it on the mounted secret, or on
a renewed certificate before mounting it. A file whose UID is not its name is shown as such: the
sender refuses it (a certificate created instead of renewed, docs/runbooks.md). `--enrollments`
adds how many enrollments each one serves, read from the registry topic (MDMPUSH_KAFKA_*).
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from services.common.errors import MdmPushError
from services.common.push_certs import (
    EXPIRING_DAYS,
    CertificateReadError,
    enrolled_under,
    read_certificate_file,
    valid_topic,
)

COLUMNS = ("topic", "serial", "issuer", "not after", "days left", "status")


def register(sub: Any) -> None:
    p = sub.add_parser("certs", help="the push certificates of a directory and their expiry")
    actions = p.add_subparsers(dest="action", required=True)
    list_p = actions.add_parser("list", help="topic, serial, issuer, expiry and status of each")
    list_p.add_argument("directory", nargs="?", type=Path, default=None,
                        help="the certificate directory (default: MDMPUSH_SENDER_CERT_DIR)")
    list_p.add_argument("--enrollments", action="store_true",
                        help="also count the enrollments of each topic (reads the registry topic)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0 if every certificate is ok, 1 if one is expiring, expired, refused or unreadable."""
    directory: Path = args.directory or _configured_dir()
    if not directory.is_dir():
        raise MdmPushError(f"{directory} is not a directory")
    rows, healthy = certificate_rows(directory, dt.datetime.now(dt.UTC))
    if not rows:
        print(f"no <topic>.pem + <topic>.key in {directory}")
        return 1
    columns: tuple[str, ...] = COLUMNS
    if args.enrollments:
        counts = enrollments_per_topic()
        columns = (*COLUMNS, "enrollments")
        rows = [(*row, str(counts.get(row[0], 0))) for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0 if healthy else 1


def certificate_rows(directory: Path, now: dt.datetime) -> tuple[list[tuple[str, ...]], bool]:
    """One row per `<topic>.pem` + `<topic>.key` pair of `directory` (what the sender reads),
    and whether all of them are ok."""
    rows: list[tuple[str, ...]] = []
    healthy = True
    for pem in sorted(directory.glob("*.pem")):
        if not (valid_topic(pem.stem) and pem.with_suffix(".key").is_file()):
            continue
        try:
            cert = read_certificate_file(pem)
        except CertificateReadError as exc:
            rows.append((pem.stem, "-", "-", "-", "-", f"unreadable: {exc}"))
            healthy = False
            continue
        status = str(cert.status(now, EXPIRING_DAYS))
        if cert.topic != pem.stem:
            status = f"refused: its topic is {cert.topic or '(none)'}"
        healthy = healthy and status == "ok"
        rows.append((pem.stem, cert.serial_hex, cert.issuer,
                     cert.not_after.strftime("%Y-%m-%d %H:%M"), f"{cert.days_left(now):.0f}",
                     status))
    return rows, healthy


def enrollments_per_topic() -> Counter[str]:
    """ENROLLED registry records per push topic (one read of the registry topic)."""
    from services.common.registry_view import load_registry
    from services.common.settings import KafkaSettings

    registry = load_registry(KafkaSettings())
    return Counter(t for t in map(enrolled_under, registry.values()) if t is not None)


def _configured_dir() -> Path:
    from services.sender.settings import SenderSettings

    return SenderSettings().cert_dir
