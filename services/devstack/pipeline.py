"""The whole delivery path on loopback, for the demo, the pipeline tests and the benchmarks.

In this process: the APNs simulator (HTTP/2 + TLS, client-certificate auth) on a thread, and the
device fleet behind it. As child processes, configured only through environment variables as in
production: the fan-out, N senders and the correlator. One `Pipeline` is one isolated deployment
(its own topic prefix, consumer groups, certificates and clock).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.common.admin import create_topics
from services.common.catalogue import DEFAULT_RETRY_DELAYS_MS, Topics, all_topics
from services.common.clock import Clock
from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.devstack import procs
from services.devstack.service_process import ServiceProcess
from services.sim.apns.certs import SimPki, make_pki
from services.sim.apns.faults import Faults
from services.sim.apns.fleet_port import DeviceGateway
from services.sim.apns.server import ApnsSimulator, SimulatorConfig, SimulatorThread


@dataclass
class PipelineSpec:
    """What to run. `certificates` are the push topics the MDM server holds certificates for."""

    certificates: list[str]
    senders: int = 1
    fanout: bool = True
    correlator: bool = True
    retry_delays_ms: tuple[int, ...] = DEFAULT_RETRY_DELAYS_MS
    partitions: int = 4
    #: Extra MDMPUSH_* variables per service, e.g. {"sender": {"MDMPUSH_SENDER_BREAKER_S": "1"}}.
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: SimulatorConfig overrides (token_rate_limit, max_concurrent_streams, ...).
    simulator: Mapping[str, object] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        kafka: KafkaSettings,
        clock: Clock,
        workdir: Path,
        spec: PipelineSpec,
        gateway: DeviceGateway | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.kafka = kafka
        self.clock = clock
        self.workdir = workdir
        self.spec = spec
        self.topics = Topics(kafka.topic_prefix)
        self.faults = faults or Faults()
        self._gateway = gateway
        self.pki: SimPki | None = None
        self.sim: SimulatorThread | None = None
        self.fanout: ServiceProcess | None = None
        self.senders: list[ServiceProcess] = []
        self.correlator: ServiceProcess | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Pipeline:
        create_topics(self.kafka, all_topics(self.spec.retry_delays_ms),
                      partitions_override=self.spec.partitions)
        self.pki = make_pki(self.workdir / "pki")
        for topic in self.spec.certificates:
            self.pki.issue(topic, name=None)
        cert_dir = self.workdir / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        for topic in self.spec.certificates:
            for suffix in (".pem", ".key"):
                (cert_dir / f"{topic}{suffix}").write_bytes(
                    (self.pki.directory / f"{topic}{suffix}").read_bytes())
        config = SimulatorConfig.from_pki(self.pki, clock=self.clock, **self.spec.simulator)
        self.sim = ApnsSimulator.run_in_thread(config, self._gateway, self.faults)
        if self.spec.fanout:
            self.fanout = self._service("fanout", "services.fanout")
            self.fanout.start()
        for i in range(self.spec.senders):
            self.start_sender(i)
        if self.spec.correlator:
            self.correlator = self._service("correlator", "services.correlator")
            self.correlator.start()
        return self

    def start_sender(self, index: int) -> ServiceProcess:
        """Start (or restart, after a kill) sender number `index`."""
        sender = self._service(f"sender-{index}", "services.sender",
                               {"MDMPUSH_SENDER_INSTANCE_ID": f"sender-{index}"})
        if index < len(self.senders):
            self.senders[index] = sender
        else:
            self.senders.append(sender)
        sender.start()
        return sender

    def stop(self) -> None:
        for proc in [self.correlator, *self.senders, self.fanout]:
            if proc is not None:
                proc.terminate()
        if self.sim is not None:
            self.sim.stop()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration -----------------------------------------------------------------------
    def _service(self, name: str, module: str, extra: Mapping[str, str] | None = None
                 ) -> ServiceProcess:
        assert self.sim is not None and self.pki is not None
        prefix = self.kafka.topic_prefix
        env = {
            "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "MDMPUSH_KAFKA_TOPIC_PREFIX": prefix,
            "MDMPUSH_KAFKA_LINGER_MS": str(self.kafka.linger_ms),
            "MDMPUSH_CLOCK_SPEED": str(self.clock.speed),
            "MDMPUSH_CLOCK_ORIGIN_MS": str(self.clock.origin_ms),
            "MDMPUSH_SENDER_CERT_DIR": str(self.workdir / "certs"),
            "MDMPUSH_SENDER_CA_PATH": str(self.pki.ca.cert_path),
            "MDMPUSH_SENDER_BASE_URL": self.sim.url,
            "MDMPUSH_SENDER_GROUP_ID": f"{prefix}sender",
            "MDMPUSH_SENDER_METRICS_PORT": "0",
            "MDMPUSH_SENDER_RETRY_DELAYS_MS": "[" + ",".join(
                str(d) for d in self.spec.retry_delays_ms) + "]",
            "MDMPUSH_CORRELATOR_GROUP_ID": f"{prefix}correlator",
            "MDMPUSH_CORRELATOR_METRICS_PORT": "0",
            "MDMPUSH_FANOUT_DATA_DIR": str(self.workdir / "fanout"),
            "MDMPUSH_FANOUT_PARTITIONS": str(self.spec.partitions),
            "MDMPUSH_FANOUT_METRICS_PORT": "0",
        }
        env.update(self.spec.env.get(name.split("-")[0], {}))
        env.update(extra or {})
        return ServiceProcess(name, module, env, self.workdir / "logs")

    def wait_registry(self, enrollment_ids: Collection[str], timeout_s: float = 120.0,
                      interval_s: float = 0.5) -> bool:
        """True once the fan-out's registry has published a record for every enrollment id.

        Check-ins and requests travel on different topics, so a request published before the
        registry has caught up expands against an older registry (as in production); tests and
        the demo wait for it first.
        """
        wanted = set(enrollment_ids)
        return procs.wait_for(lambda: wanted <= load_registry(self.kafka).keys(), timeout_s,
                              interval_s=interval_s)

    def logs(self) -> str:
        """The tail of every service's log, for a failing test's message."""
        procs = [p for p in [self.fanout, *self.senders, self.correlator] if p is not None]
        return "\n".join(f"--- {p.name} (alive={p.alive})\n{p.log_tail()}" for p in procs)

