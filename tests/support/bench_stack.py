"""The pipeline's services as processes against a simulator that runs in a process of its own,
for benchmarks that count pushes where they land (``tests/bench/sim_arrivals.py``).

``services.devstack.pipeline.Pipeline`` keeps the simulator on a thread of the calling process,
which then shares its GIL with whatever the benchmark does; here the benchmark process only
produces, publishes and waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from services.common.kafka import make_producer
from services.common.registry_view import load_registry
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.devstack.procs import wait_for
from services.devstack.service_process import ServiceProcess
from tests.support.sender_harness import Pki, sender_settings, settings_env

SERDE = AvroSerde()


def service_env(kafka: KafkaSettings, directory: Path) -> dict[str, str]:
    """What the fan-out and the correlator need: the broker, the deployment's prefix, no ports."""
    prefix = kafka.topic_prefix
    return {
        "MDMPUSH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "MDMPUSH_KAFKA_TOPIC_PREFIX": prefix,
        "MDMPUSH_CORRELATOR_GROUP_ID": f"{prefix}correlator",
        "MDMPUSH_CORRELATOR_METRICS_PORT": "0",
        "MDMPUSH_FANOUT_DATA_DIR": str(directory / "fanout"),
        "MDMPUSH_FANOUT_METRICS_PORT": "0",
    }


@contextmanager
def stack(kafka: KafkaSettings, directory: Path, pki: Pki, sim_port: int, *,
          fanout: bool, correlator: bool, partitions: int,
          **sender: object) -> Iterator[dict[str, ServiceProcess]]:
    """One sender (and the fan-out, the correlator if asked) as processes for the block.

    The correlator runs without re-pushes within the block's time (no silent re-push, a race
    window of an hour): with no devices behind the simulator nothing ever answers, and its
    re-pushes would be counted as the benchmark's pushes."""
    env = service_env(kafka, directory)
    env["MDMPUSH_FANOUT_PARTITIONS"] = str(partitions)
    settings = sender_settings(pki, f"https://127.0.0.1:{sim_port}", **sender)
    procs = {"sender": ServiceProcess("sender", "services.sender",
                                      {**env, **settings_env(settings, kafka)},
                                      directory / "logs")}
    if fanout:
        procs["fan-out"] = ServiceProcess("fan-out", "services.fanout", env, directory / "logs")
    if correlator:
        quiet = {"MDMPUSH_CORRELATOR_REPUSH_SILENT": "false",
                 "MDMPUSH_CORRELATOR_RACE_WINDOW_MS": str(3_600_000)}
        procs["correlator"] = ServiceProcess("correlator", "services.correlator",
                                             {**env, **quiet}, directory / "logs")
    with ExitStack() as stop:
        for proc in procs.values():
            proc.start()
            stop.callback(proc.terminate)
        yield procs


def produce(kafka: KafkaSettings, topic: str, schema: str,
            records: Iterable[tuple[str, dict[str, object]]]) -> None:
    """Produce and flush; raises unless every record was acknowledged."""
    producer = make_producer(kafka)
    failed: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for key, record in records:
        while True:
            try:
                producer.produce(topic, SERDE.encode(schema, record), key=key,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise SystemExit(f"{topic}: {len(failed)} records refused: {failed[:3]}")


def token_updates(tenant: str, topic: str, ids: Iterable[tuple[str, str]]
                  ) -> Iterator[tuple[str, dict[str, object]]]:
    """A TokenUpdate check-in per (enrollment id, token hex), as the registry is built from."""
    now = int(time.time() * 1000)
    for enrollment_id, token in ids:
        yield enrollment_id, {
            "event_id": f"ev-{enrollment_id}", "enrollment_id": enrollment_id, "tenant": tenant,
            "message_type": "TOKEN_UPDATE", "udid": enrollment_id, "topic": topic,
            "token_hex": token, "push_magic": f"m-{enrollment_id}", "occurred_at": now}


def check_alive(procs: dict[str, ServiceProcess]) -> None:
    """Stop the benchmark (with the log's tail) as soon as one of its services has exited."""
    for name, proc in procs.items():
        if not proc.alive:
            raise SystemExit(f"{name} exited:\n{proc.log_tail(10)}")


def wait_registry(kafka: KafkaSettings, enrollment_ids: Iterable[str],
                  procs: dict[str, ServiceProcess], timeout_s: float = 900.0) -> None:
    wanted = set(enrollment_ids)

    def done() -> bool:
        check_alive(procs)
        return wanted <= load_registry(kafka).keys()

    if not wait_for(done, timeout_s, interval_s=0.5):
        raise SystemExit("the fan-out's registry did not get every enrollment")
