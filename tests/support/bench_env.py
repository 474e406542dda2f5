"""What every benchmark script needs first: a real broker, an isolated deployment, certificates,
and processes that are stopped however the run ends.

`bench_kafka` (whole-pipeline benchmarks): `MDMPUSH_TEST_BOOTSTRAP` names a broker; otherwise the
local Kafka 2.3.0 is started (and left running, as `mdmpush kafka up` would). `fresh_kafka`
(the sender benchmarks): `MDMPUSH_TEST_BOOTSTRAP`, else a broker already at 127.0.0.1:9092, with
the topics created. Each run gets its own topic prefix.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka
from services.sender.settings import SenderSettings
from tests.support.sender_harness import (
    REPO,
    TEST_DELAYS_MS,
    Pki,
    create_retry_topics,
    make_certs,
    spawn_sender,
)


def bench_kafka(name: str) -> KafkaSettings:
    bootstrap = os.environ.get("MDMPUSH_TEST_BOOTSTRAP") or LocalKafka().up().bootstrap
    return KafkaSettings(bootstrap_servers=bootstrap,
                         topic_prefix=f"bench-{name}-{uuid.uuid4().hex[:8]}.")


def fresh_kafka(partitions: int = 2) -> tuple[KafkaSettings, Topics]:
    """A deployment of its own with every topic, at 2 partitions to keep one broker fast (more
    where several senders must each own some), and the retry tiers `sender_settings` configures."""
    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("MDMPUSH_TEST_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
    )
    create_topics(kafka, all_topics(), partitions_override=partitions)
    create_retry_topics(kafka, TEST_DELAYS_MS)
    return kafka, Topics(kafka.topic_prefix)


@contextmanager
def bench_workspace(name: str, certificates: int) -> Iterator[tuple[Path, Pki]]:
    """A scratch directory for logs and ready files, removed at the end, holding a test PKI with
    `certificates` push certificates."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        directory = Path(tmp)
        yield directory, make_certs(directory, certificates)


@contextmanager
def stopping(*processes: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
             timeout_s: float = 30.0) -> Iterator[None]:
    """Send `sig` to every process, then wait for each, however the block ends: a failed run
    leaves nothing running, and several senders signalled together drain at the same time."""
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(sig)
        for process in processes:
            process.wait(timeout_s)


@contextmanager
def sender_process(settings: SenderSettings, kafka: KafkaSettings, log: Path,
                   sig: int = signal.SIGTERM, timeout_s: float = 30.0
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m services.sender` for the block, then `sig` (SIGTERM: drain; SIGKILL: a crash)."""
    process = spawn_sender(settings, kafka, log)
    with stopping(process, sig=sig, timeout_s=timeout_s):
        yield process


@contextmanager
def sim_process(pki: Pki, directory: Path) -> Iterator[int]:
    """The APNs simulator in a process of its own, so that it does not share this process's GIL
    with the measuring side; yields its port, stops it with SIGTERM at the end."""
    ready = directory / "sim.ready"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.sim.apns", "--port", "0", "--certs",
         str(pki.pki.directory), "--ready-file", str(ready)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=(directory / "sim.log").open("wb"),
    )
    with stopping(process, timeout_s=10):
        for _ in range(200):  # bounded: 10 s
            if ready.exists() and ready.read_text().endswith("\n"):
                break
            time.sleep(0.05)
        else:
            process.kill()
            sys.exit("the simulator did not start")
        yield int(ready.read_text().split()[2])
