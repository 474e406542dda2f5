"""Which real Kafka broker the tests use, in this order of preference.

1. `MDMPUSH_TEST_BOOTSTRAP` (an explicit address) overrides everything;
2. testcontainers Kafka where a Docker engine answers, always the pinned `KAFKA_IMAGE` (never
   testcontainers' default, which changes with its releases);
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

#: The one image the Docker path runs: Confluent Platform 7.6.1 = Apache Kafka 3.6.1 (the
#: zookeeper mode testcontainers 4 configures). The local path runs Kafka 2.3.0.
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.1"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    kind: str  # "explicit", "testcontainers <image>" or "local"


def planned_broker() -> str:
    """Which broker a session will use, said before it starts (for the session header)."""
    explicit = os.environ.get("MDMPUSH_TEST_BOOTSTRAP")
    if explicit:
        return f"explicit MDMPUSH_TEST_BOOTSTRAP={explicit}"
    if docker_available():
        return f"testcontainers {KAFKA_IMAGE}"
    return "local Kafka 2.3.0 (mdmpush kafka up)"


def broker_version(bootstrap: str, timeout_s: float = 10.0) -> str:
    """What the running broker says it is: its inter-broker protocol version (e.g. "2.3-IV1"),
    read with DescribeConfigs, so an explicit address is recorded as faithfully as our own."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from services.common.kafka.logs import client_logger

    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=client_logger("test"))
    brokers = admin.list_topics(timeout=timeout_s).brokers
    resource = ConfigResource(ConfigResource.Type.BROKER, str(min(brokers)))
    config = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    entry = config.get("inter.broker.protocol.version")
    return f"{len(brokers)} broker(s), inter.broker.protocol.version " + (
        entry.value if entry is not None else "unknown")


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

        with KafkaContainer(KAFKA_IMAGE) as container:
            yield Broker(container.get_bootstrap_server(), f"testcontainers {KAFKA_IMAGE}")
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
