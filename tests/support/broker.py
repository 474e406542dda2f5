"""Which real Kafka broker the tests use, in this order of preference.

1. `MDMPUSH_TEST_BOOTSTRAP` (an explicit address) overrides everything;
2. testcontainers Kafka where a Docker engine answers;
3. the local Kafka 2.3.0 of `mdmpush kafka up` (started here if needed, stopped at the end if
   this session started it).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # "explicit", "testcontainers" or "local"


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


@contextmanager
def provide_broker() -> Iterator[Broker]:
    explicit = os.environ.get("MDMPUSH_TEST_BOOTSTRAP")
    if explicit:
        yield Broker(explicit, "explicit")
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield Broker(container.get_bootstrap_server(), "testcontainers")
        return
    from services.devstack.kafka import LocalKafka

    kafka = LocalKafka()
    # Running means "its process exists", not "it answered just now": a busy broker that is
    # slow to answer must not be stopped at the end as if this session had started it.
    was_running = kafka.status().broker_pid is not None
    status = kafka.up(timeout_s=90)
    try:
        yield Broker(status.bootstrap, "local")
    finally:
        if not was_running:
            # Clients the tests dropped but a reference cycle keeps alive would otherwise log
            # "Connection refused" once the broker is gone: free them while it still answers.
            gc.collect()
            kafka.down()
