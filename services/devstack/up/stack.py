"""What `mdmpush up` runs: Kafka, topics, credentials, certificates, then four supervised services.

The services get the same `MDMPUSH_*` environment as when deployed, plus what one host needs:
the broker, a state directory for the fan-out, the gateway's generated credentials, metrics
ports, and either the APNs simulator (`--simulate`) or the certificate directory for real APNs.
A variable already set in the caller's environment wins over these defaults, except the few
that make the stack hang together (broker, and in simulation the sender's endpoint and
certificates).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from services.common.admin import create_topics
from services.common.catalogue import all_topics
from services.common.errors import MdmPushError
from services.common.settings import KafkaSettings
from services.correlator.settings import CorrelatorSettings
from services.devstack import procs
from services.devstack.kafka import LocalKafka
from services.devstack.up.credentials import LocalCredentials, ensure_credentials
from services.devstack.up.supervisor import Backoff, ChildSpec, Supervisor
from services.gateway.settings import GatewaySettings
from services.sender.settings import SenderSettings
from services.sim.apns.certs import issue_push_certificate, make_pki

#: The push topic the simulator issues a certificate for when none is given.
SIMULATED_TOPIC = "com.apple.mgmt.External.mdmpush-simulated"
#: The fan-out's metrics port under `mdmpush up` (it has none by default).
FANOUT_METRICS_PORT = "9101"
#: Variables by which the caller has configured the gateway's credentials already.
_CREDENTIAL_VARIABLES = ("MDMPUSH_GATEWAY_PRINCIPALS_FILE", "MDMPUSH_GATEWAY_PRINCIPALS",
                         "MDMPUSH_GATEWAY_API_KEY", "MDMPUSH_GATEWAY_WEBHOOK_SECRET",
                         "MDMPUSH_GATEWAY_INSECURE_DEV")


class UpError(MdmPushError):
    """`mdmpush up` cannot start as asked; `str()` says what to change."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    state_dir: Path
    bootstrap: str | None = None
    simulate: bool = False
    certs: Path | None = None
    topics: tuple[str, ...] = ()
    partitions: int | None = None
    replication_factor: int = 1
    grace_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)


def certificate_topics(directory: Path) -> list[str]:
    """Topics with both `<topic>.pem` and `<topic>.key` in `directory` (the sender's layout)."""
    return sorted(p.stem for p in directory.glob("*.pem") if p.with_suffix(".key").is_file())


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


class Stack:
    """One run of `mdmpush up`; `say` prints what the operator needs to know."""

    def __init__(self, options: UpOptions, say: Callable[[str], None] = print,
                 environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.say = say
        self.environ = dict(os.environ if environ is None else environ)
        self.state = options.state_dir
        self.logs = self.state / "logs"
        self._local_kafka: LocalKafka | None = None
        self.supervisor: Supervisor | None = None

    # -- preparation --------------------------------------------------------------------------
    def _kafka(self) -> str:
        """--bootstrap, else MDMPUSH_KAFKA_BOOTSTRAP_SERVERS, else the local Kafka (started
        here if it is not running, and then stopped here too)."""
        given = self.options.bootstrap or self.environ.get("MDMPUSH_KAFKA_BOOTSTRAP_SERVERS")
        if given:
            self.say(f"[up] Kafka: {given}")
            return given
        kafka = LocalKafka()
        running = kafka.status().ready
        status = kafka.up()
        if not running:
            self._local_kafka = kafka  # started here: stopped here
        self.say(f"[up] local Kafka {'already running' if running else 'started'} at "
                 f"{status.bootstrap} (data in {kafka.state})")
        return status.bootstrap

    def _default(self, env: dict[str, str], name: str, value: str) -> None:
        if name not in self.environ:
            env[name] = value

    def _credentials(self, env: dict[str, str]) -> LocalCredentials | None:
        if any(name in self.environ for name in _CREDENTIAL_VARIABLES):
            return None
        tenant = GatewaySettings().default_tenant
        creds = ensure_credentials(self.state / "credentials", tenant)
        env["MDMPUSH_GATEWAY_PRINCIPALS_FILE"] = str(creds.principals_path)
        return creds

    def _apns(self, env: dict[str, str]) -> ChildSpec | None:
        """The simulator's child spec (simulation), or the checked certificate directory."""
        if not self.options.simulate:
            certs = self.options.certs
            if certs is None:
                raise UpError("give --certs DIR (push certificates as <topic>.pem + "
                              "<topic>.key) or --simulate")
            if not certs.is_dir():
                raise UpError(f"--certs {certs}: not a directory")
            topics = certificate_topics(certs)
            if not topics:
                raise UpError(f"--certs {certs}: no <topic>.pem with its <topic>.key")
            env["MDMPUSH_SENDER_CERT_DIR"] = str(certs.resolve())
            endpoint = SenderSettings(cert_dir=certs).endpoint()
            self.say(f"[up] APNs: {endpoint}, certificates for {', '.join(topics)}")
            return None
        sim = self.state / "simulator"
        pki = make_pki(sim / "pki")
        cert_dir = sim / "certs"
        topics = list(self.options.topics or (SIMULATED_TOPIC,))
        for topic in topics:
            issue_push_certificate(pki.ca, topic, cert_dir)
        port = procs.free_port()
        env.update({
            "MDMPUSH_SENDER_CERT_DIR": str(cert_dir),
            "MDMPUSH_SENDER_CA_PATH": str(pki.ca.cert_path),
            "MDMPUSH_SENDER_BASE_URL": f"https://127.0.0.1:{port}",
        })
        self.say(f"[up] APNs: simulator at https://127.0.0.1:{port}, certificates for "
                 f"{', '.join(topics)} (devices must enroll with that topic)")
        return ChildSpec(
            "apns-simulator",
            _python("services.sim.apns", "--certs", str(pki.directory), "--port", str(port)),
            {}, self.logs / "apns-simulator.log",
            ready=lambda: procs.port_open("127.0.0.1", port))

    def plan(self) -> list[ChildSpec]:
        """Everything before the services start; returns them in start order.

        What can be refused (certificates, busy ports) is checked before Kafka is touched."""
        self.state.mkdir(parents=True, exist_ok=True)
        env: dict[str, str] = {}
        self._default(env, "MDMPUSH_FANOUT_DATA_DIR", str(self.state / "fanout"))
        self._default(env, "MDMPUSH_FANOUT_METRICS_PORT", FANOUT_METRICS_PORT)
        if self.options.partitions:
            self._default(env, "MDMPUSH_FANOUT_PARTITIONS", str(self.options.partitions))
        simulator = self._apns(env)
        self._check_ports(env)
        creds = self._credentials(env)
        bootstrap = self._kafka()
        env["MDMPUSH_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        created = create_topics(kafka, all_topics(SenderSettings().retry_delays_ms),
                                self.options.replication_factor, self.options.partitions)
        self.say(f"[up] topics: {len(created)} created"
                 + (f" (prefix {kafka.topic_prefix!r})" if kafka.topic_prefix else ""))
        services = [
            ChildSpec(name, _python(f"services.{name}"), env, self.logs / f"{name}.log")
            for name in ("fanout", "sender", "correlator", "gateway")
        ]
        self._announce(env, creds)
        return ([simulator] if simulator else []) + services

    def _ports(self, env: Mapping[str, str]) -> dict[str, int]:
        merged = {**self.environ, **env}
        gateway = GatewaySettings()
        return {
            "gateway": gateway.port,
            "gateway metrics": gateway.ops_port,
            "fan-out metrics": int(merged.get("MDMPUSH_FANOUT_METRICS_PORT", "0")),
            "sender metrics": SenderSettings().metrics_port,
            "correlator metrics": CorrelatorSettings().metrics_port,
        }

    def _check_ports(self, env: Mapping[str, str]) -> None:
        busy = [f"{what} port {port}" for what, port in self._ports(env).items()
                if port and procs.port_open("127.0.0.1", port)]
        if busy:
            raise UpError(f"already in use: {', '.join(busy)} (another `mdmpush up`? set the "
                          "MDMPUSH_*_PORT variables, see docs/configuration.md)")

    def _announce(self, env: Mapping[str, str], creds: LocalCredentials | None) -> None:
        ports = self._ports(env)
        host = GatewaySettings().host
        self.say(f"[up] gateway: http://{host}:{ports['gateway']} (NanoMDM push API "
                 f"/v1/push/<ids>, webhook /webhook, check-ins /checkin)")
        if creds is not None:
            self.say(f"[up] API key: {creds.api_key_path} (HTTP Basic password, any user "
                     f"name); webhook HMAC secret: {creds.webhook_secret_path}")
            self.say(f"[up]   e.g. curl -u nanomdm:$(cat {creds.api_key_path}) -X PUT "
                     f"http://{host}:{ports['gateway']}/v1/push/<UDID>")
        else:
            self.say("[up] gateway credentials: from your MDMPUSH_GATEWAY_* variables")
        metrics = ", ".join(f"{what} http://127.0.0.1:{port}/metrics"
                            for what, port in ports.items() if what != "gateway" and port)
        self.say(f"[up] metrics: {metrics}")
        self.say(f"[up] logs: {self.logs}/<service>.log (JSON lines); status: "
                 f"{self.state / 'status.json'}; Ctrl-C stops everything")

    # -- running ------------------------------------------------------------------------------
    def run(self) -> int:
        """Start everything, supervise until SIGINT/SIGTERM, stop everything; exit code."""
        supervisor = Supervisor(self.plan(), backoff=self.options.backoff,
                                status_path=self.state / "status.json")
        self.supervisor = supervisor

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            supervisor.request_stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            supervisor.start()
            self.say("[up] running: " + ", ".join(
                f"{name} pid {info['pid']}" for name, info in supervisor.status().items()))
            supervisor.run()
            self.say(f"[up] stopping (grace {self.options.grace_s:.0f} s)")
        finally:
            codes = supervisor.stop(self.options.grace_s)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._local_kafka is not None:
                self._local_kafka.down()
                self.say("[up] local Kafka stopped")
        restarts = {n: i["restarts"] for n, i in supervisor.status().items() if i["restarts"]}
        self.say("[up] stopped: " + ", ".join(f"{n} {_exit_text(c)}" for n, c in codes.items())
                 + (f"; restarts: {restarts}" if restarts else ""))
        return 0


def _exit_text(code: int | None) -> str:
    if code is None:
        return "not running"
    return "exit 0" if code == 0 else (f"signal {-code}" if code < 0 else f"exit {code}")
