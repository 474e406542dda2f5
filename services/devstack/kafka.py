"""Run a real Kafka 2.3.0 broker and its ZooKeeper on loopback, for development, tests and demo.

`up` is idempotent: it reuses the cache and a broker that is already running. The broker is
"ready" when it answers a metadata request, not when its port opens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

from services.common.errors import LocalKafkaError
from services.common.kafka.logs import client_logger
from services.devstack import procs
from services.devstack.kafka_install import KafkaInstall, ensure_installed
from services.devstack.paths import cache_dir, state_dir

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class KafkaStatus:
    zookeeper_pid: int | None
    broker_pid: int | None
    bootstrap: str
    ready: bool


class LocalKafka:
    """One ZooKeeper + one broker whose data, logs and PID files live in the state directory."""

    def __init__(
        self,
        kafka_port: int | None = None,
        zk_port: int | None = None,
        state: Path | None = None,
        cache: Path | None = None,
    ) -> None:
        self.kafka_port = kafka_port or int(os.environ.get("MDMPUSH_LOCAL_KAFKA_PORT", "9092"))
        self.zk_port = zk_port or int(os.environ.get("MDMPUSH_LOCAL_ZK_PORT", "2181"))
        self.state = (state or state_dir()) / "kafka"
        self.cache = cache or cache_dir()

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def _zk_pid(self) -> Path:
        return self.state / "zookeeper.pid"

    @property
    def _broker_pid(self) -> Path:
        return self.state / "kafka.pid"

    def install(self) -> KafkaInstall:
        """Install (or find in the cache) Kafka and the ZooKeeper client jars."""
        return ensure_installed(self.cache)

    def up(self, timeout_s: float = 60.0) -> KafkaStatus:
        """Start what is not running; return when the broker answers metadata requests."""
        if shutil.which("java") is None:
            raise LocalKafkaError("Java not found on PATH: install a Java 17 runtime")
        install = self.install()
        self.state.mkdir(parents=True, exist_ok=True)
        if procs.read_pid(self._zk_pid) is None:
            self._refuse_busy_port(self.zk_port, "ZooKeeper")
            self._start_zookeeper(install)
            if not procs.wait_for(lambda: _zk_ok(self.zk_port), 30.0):
                raise LocalKafkaError(f"ZooKeeper did not start; see {self.state / 'zk.log'}")
        if procs.read_pid(self._broker_pid) is None:
            self._refuse_busy_port(self.kafka_port, "Kafka")
            self._start_broker(install)
        if not procs.wait_for(self._broker_ready, timeout_s, interval_s=0.25):
            raise LocalKafkaError(
                f"broker not ready after {timeout_s:.0f}s; see {self.state / 'kafka.log'}"
            )
        return self.status()

    def down(self) -> None:
        """Stop the broker first (it deregisters from ZooKeeper), then ZooKeeper."""
        procs.stop(self._broker_pid, timeout_s=30.0)
        procs.stop(self._zk_pid)

    def status(self) -> KafkaStatus:
        broker = procs.read_pid(self._broker_pid)
        return KafkaStatus(
            procs.read_pid(self._zk_pid),
            broker,
            self.bootstrap,
            broker is not None and self._broker_ready(),
        )

    def _refuse_busy_port(self, port: int, what: str) -> None:
        if procs.port_open(HOST, port):
            raise LocalKafkaError(
                f"port {port} is in use by another process; {what} cannot start there "
                f"(stop it, or set MDMPUSH_LOCAL_{'KAFKA' if what == 'Kafka' else 'ZK'}_PORT)"
            )

    def _start_zookeeper(self, install: KafkaInstall) -> None:
        conf = self.state / "zookeeper.properties"
        conf.write_text(
            f"dataDir={self.state / 'zookeeper-data'}\n"
            f"clientPort={self.zk_port}\nclientPortAddress={HOST}\n"
            "maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=*\n"
        )
        cmd = [str(install.home / "bin" / "zookeeper-server-start.sh"), str(conf)]
        procs.spawn(cmd, self.state / "zk.log", self._zk_pid, self._env(heap="-Xmx256m"))

    def _start_broker(self, install: KafkaInstall) -> None:
        conf = self.state / "server.properties"
        conf.write_text(_broker_properties(self.kafka_port, self.zk_port, self.state))
        env = self._env(heap="-Xmx1g -Xms512m")
        # The ZooKeeper 3.8 client first: the bundled 3.4 client fails on Java >= 14.
        env["CLASSPATH"] = ":".join(str(j) for j in install.zk_client_jars)
        cmd = [str(install.home / "bin" / "kafka-server-start.sh"), str(conf)]
        procs.spawn(cmd, self.state / "kafka.log", self._broker_pid, env)

    def _env(self, heap: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CLASSPATH", None)
        env["KAFKA_HEAP_OPTS"] = heap
        env["LOG_DIR"] = str(self.state / "logs")
        env["KAFKA_GC_LOG_OPTS"] = " "
        return env

    def _broker_ready(self) -> bool:
        if not procs.port_open(HOST, self.kafka_port):
            return False
        try:
            # Quiet (log_level 0): refused connections are expected while the broker starts.
            admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0},
                                logger=client_logger("devstack-probe"))
            md = admin.list_topics(timeout=2)
        except Exception:  # KafkaException or a transport error: not ready yet
            return False
        return bool(md.brokers)


def _zk_ok(port: int) -> bool:
    try:
        out = subprocess.run(
            ["bash", "-c", f"exec 3<>/dev/tcp/{HOST}/{port}; printf ruok >&3; head -c 4 <&3"],
            capture_output=True, text=True, timeout=3,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.stdout == "imok"


def _broker_properties(kafka_port: int, zk_port: int, state: Path) -> str:
    """A one-broker cluster tuned to start fast and rebalance fast (tests and demo)."""
    return "\n".join(
        [
            "broker.id=0",
            f"listeners=PLAINTEXT://{HOST}:{kafka_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{kafka_port}",
            f"log.dirs={state / 'kafka-data'}",
            f"zookeeper.connect={HOST}:{zk_port}",
            "zookeeper.connection.timeout.ms=30000",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=6000",
            "auto.create.topics.enable=true",
            "delete.topic.enable=true",
            "log.retention.hours=24",
            "num.network.threads=3",
            "num.io.threads=4",
            "",
        ]
    )
