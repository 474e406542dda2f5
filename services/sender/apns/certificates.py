"""The mounted push certificates: which one is in use per topic, renewals, refused replacements.

Directory layout (a Kubernetes secret or any mounted directory)::

    <directory>/<topic>.pem   the push certificate (PEM), subject UID = <topic>
    <directory>/<topic>.key   its private key (PEM, unencrypted, mode 0600)

`refresh()` (the client pool calls it every `cert_reload_s`) looks at the files again: a file
pair whose size, mtime or inode changed is read and judged once:

- same topic (a renewal: new serial, new validity): taken; the pool re-creates that topic's
  connections, letting requests already in flight on the old ones finish;
- another topic (a certificate *created* instead of renewed: its UID differs from the file's
  name): refused. The certificate in use stays in use, from a private copy of its bytes (the
  mounted file no longer holds it), the refusal is logged in one line and exported
  (`mdmpush_push_certificate_replacement_refused`), with the enrollments that would have become
  unreachable: every device enrolled under the old topic ignores pushes of another topic until it
  re-enrolls;
- a certificate and key that do not belong together (one replaced, the other not yet), or a file
  that is not PEM: not taken, logged, looked at again when the files change.

Events only name a topic; the topic is validated before it becomes a file name, so an event can
never make the sender read another file. A topic first named by a job is looked up on demand, so
a certificate mounted between two refreshes works at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from services.common.push_certs import (
    CertificateReadError,
    PushCertificate,
    key_matches,
    parse_certificate,
    valid_topic,
)
from services.sender.enrollment_census import EnrollmentCensus

log = logging.getLogger(__name__)

#: (size, mtime ns, inode) of the certificate and the key: a Kubernetes secret update swaps a
#: symlink, an editor or `cp` rewrites in place; either changes one of them.
Signature = tuple[int, int, int, int, int, int]


class UnknownCertificateError(LookupError):
    """No usable certificate is mounted for this topic (the job cannot be sent from here)."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """The files a client connects with: the mounted ones, or a private copy of a refused
    replacement's predecessor."""

    topic: str
    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class Refusal:
    """A replacement that was not taken: what the file holds now."""

    found_topic: str | None
    serial: int


@dataclass(frozen=True, slots=True)
class CertificateState:
    """One topic's certificate as the metrics see it (read from the scrape thread)."""

    topic: str
    #: The certificate pushes use (None: the file was refused and none was in use before).
    in_use: PushCertificate | None
    refused: Refusal | None


@dataclass(frozen=True, slots=True)
class _InUse:
    facts: PushCertificate
    files: CertificateFiles
    #: Kept in memory: if the mounted files are replaced by a refused certificate, the next
    #: connection still needs these.
    cert_pem: bytes
    key_pem: bytes


class CertificateStore:
    """The push certificates of a directory, as judged by the last `refresh()`.

    Used from the sender's loop thread only; `states()` and `enrollments()` from any thread.
    """

    def __init__(self, directory: Path, census: EnrollmentCensus | None = None) -> None:
        self._directory = directory
        self._census = census
        self._in_use: dict[str, _InUse] = {}
        self._refused: dict[str, Refusal] = {}
        #: The signature each file pair had when last judged: a pair is read once per change.
        self._judged: dict[str, Signature | None] = {}
        self._copies: Path | None = None
        self._states: tuple[CertificateState, ...] = ()
        self._scan()

    def files_for(self, topic: str) -> CertificateFiles:
        """The files to connect with for ``topic``; raises ``UnknownCertificateError`` if none
        are usable (missing, invalid name, refused without a predecessor)."""
        if not valid_topic(topic):
            raise UnknownCertificateError(f"not a valid push topic: {topic!r}")
        if topic not in self._in_use and self._judge(topic):
            self._publish()
        found = self._in_use.get(topic)
        if found is None:
            raise UnknownCertificateError(f"no usable {topic}.pem/.key in {self._directory}")
        return found.files

    def topics(self) -> list[str]:
        """Every topic with a certificate in use."""
        return sorted(self._in_use)

    def refresh(self) -> set[str]:
        """Judge what changed on disk; returns the topics whose certificate in use changed (their
        connections must be re-created). Starts the census at the first call: a store that is
        never refreshed (a sender built, not run) starts no thread."""
        if self._census is not None:
            self._census.start()
        return self._scan()

    def _scan(self) -> set[str]:
        stems = {p.stem for p in self._directory.glob("*.pem") if valid_topic(p.stem)}
        changed = {stem for stem in sorted(stems | set(self._in_use) | set(self._refused))
                   if self._judge(stem)}
        self._publish()
        return changed

    def states(self) -> tuple[CertificateState, ...]:
        """Every topic in use or refused, as of the last refresh (any thread)."""
        return self._states

    def enrollments(self, topic: str) -> int | None:
        """Enrollments under `topic` at the census's last count (None: not counted)."""
        return None if self._census is None else self._census.count(topic)

    def enrollment_counts(self) -> dict[str, int] | None:
        """Enrollments per topic with a certificate here (None: not counted)."""
        counts = None if self._census is None else self._census.counts()
        if counts is None:
            return None
        return {state.topic: counts.get(state.topic, 0) for state in self._states}

    def close(self) -> None:
        """Stop counting and remove the private copies."""
        if self._census is not None:
            self._census.close()
        if self._copies is not None:
            shutil.rmtree(self._copies, ignore_errors=True)
            self._copies = None

    # -- judging one file pair --------------------------------------------------------------------
    def _judge(self, stem: str) -> bool:
        """Read `stem`'s files if they changed since last judged; True if the certificate in use
        for `stem` changed."""
        mounted = CertificateFiles(stem, self._directory / f"{stem}.pem",
                                   self._directory / f"{stem}.key")
        signature = _signature(mounted)
        if stem in self._judged and signature == self._judged[stem]:
            return False
        current = self._in_use.get(stem)
        if signature is None:
            # Not remembered: jobs may name any number of topics that have no files here.
            self._judged.pop(stem, None)
            self._refused.pop(stem, None)
            if current is None:
                return False
            log.warning("push certificate %s removed from %s: its pushes fail from now on",
                        stem, self._directory)
            del self._in_use[stem]
            return True
        self._judged[stem] = signature
        try:
            cert_pem, key_pem = mounted.cert_path.read_bytes(), mounted.key_path.read_bytes()
            facts = parse_certificate(cert_pem, str(mounted.cert_path))
            if not key_matches(cert_pem, key_pem, str(mounted.key_path)):
                raise CertificateReadError(
                    f"{mounted.key_path} is not the key of {mounted.cert_path} (replaced one "
                    "without the other?)")
        except (CertificateReadError, OSError) as exc:
            log.warning("push certificate %s not taken: %s; %s", stem, exc,
                        _keeping(current) if current else "its pushes fail until it is fixed")
            return False
        if facts.topic != stem:
            return self._refuse(stem, facts, current)
        self._refused.pop(stem, None)
        self._in_use[stem] = _InUse(facts, mounted, cert_pem, key_pem)
        if current is None:
            log.info("push certificate %s: serial %s, valid until %s, issuer %s", stem,
                     facts.serial_hex, _day(facts.not_after), facts.issuer)
        elif current.facts.serial != facts.serial:
            # Same topic, so it is taken; expiring sooner than its predecessor, it is probably an
            # old file mounted by mistake: say so, the expiry alerts will follow it.
            level = logging.WARNING if facts.not_after < current.facts.not_after else logging.INFO
            log.log(level, "push certificate %s renewed: serial %s -> %s, valid until %s -> %s%s",
                    stem, current.facts.serial_hex, facts.serial_hex,
                    _day(current.facts.not_after), _day(facts.not_after),
                    " (sooner than before: an older certificate?)" if level > logging.INFO else "")
        return current is not None and (current.facts.serial != facts.serial
                                         or current.files != mounted)

    def _refuse(self, stem: str, facts: PushCertificate, current: _InUse | None) -> bool:
        """Refuse a file whose UID is not its name; keep `current` usable from a private copy."""
        self._refused[stem] = Refusal(facts.topic, facts.serial)
        count = self.enrollments(stem)
        unreachable = "an uncounted number of" if count is None else str(count)
        log.error(
            "push certificate %s.pem refused: it now holds a certificate for topic %s (serial %s),"
            " a new certificate instead of a renewal; %s enrollments under %s would have become "
            "unreachable; %s. Renew the certificate of %s in the Apple Push Certificates Portal "
            "and mount that.", stem, facts.topic or "(none)", facts.serial_hex, unreachable, stem,
            _keeping(current) if current else "none was in use, its pushes fail", stem)
        if current is None or current.files.cert_path.parent != self._directory:
            return False
        self._in_use[stem] = replace(current, files=self._private_copy(current))
        return True

    def _private_copy(self, current: _InUse) -> CertificateFiles:
        """Write the certificate in use and its key where the mounted files were read from
        before they changed: the pool's next connection must present them, not the new ones."""
        if self._copies is None:
            self._copies = Path(tempfile.mkdtemp(prefix="mdmpush-certs-"))
        topic, serial = current.facts.topic or current.files.topic, current.facts.serial_hex
        copy = CertificateFiles(current.files.topic, self._copies / f"{topic}-{serial}.pem",
                                self._copies / f"{topic}-{serial}.key")
        _write_private(copy.cert_path, current.cert_pem)
        _write_private(copy.key_path, current.key_pem)
        return copy

    def _publish(self) -> None:
        topics = sorted(set(self._in_use) | set(self._refused))
        self._states = tuple(
            CertificateState(t, self._in_use[t].facts if t in self._in_use else None,
                             self._refused.get(t))
            for t in topics)


def _signature(files: CertificateFiles) -> Signature | None:
    try:
        c, k = files.cert_path.stat(), files.key_path.stat()
    except OSError:
        return None
    return (c.st_size, c.st_mtime_ns, c.st_ino, k.st_size, k.st_mtime_ns, k.st_ino)


def _keeping(current: _InUse) -> str:
    return (f"still using serial {current.facts.serial_hex} "
            f"(valid until {_day(current.facts.not_after)})")


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
