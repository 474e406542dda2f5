"""`python -m services.fanout`: one fan-out worker, configured from `MDMPUSH_*` variables.

faust's web server stays off; `MDMPUSH_FANOUT_METRICS_PORT` serves /metrics, /livez and /readyz
instead (services/common/ops_server.py): a faust timer stamps the heartbeat, so /livez fails when
the event loop is wedged; /readyz waits for the worker to start and partitions to be assigned.
SIGTERM/SIGINT stop the worker cleanly (offsets of finished work committed).
"""

from __future__ import annotations

import sys
from typing import Any

import faust
from confluent_kafka import KafkaException

from services.common.admin import replication
from services.common.config_reference import print_help
from services.common.logging_setup import configure_logging
from services.common.ops_server import Heartbeat, OpsServer, OpsSettings, ReadyCheck
from services.common.settings import KafkaSettings
from services.fanout.app import create_app
from services.fanout.settings import FanoutSettings

#: Seconds between heartbeats of the event loop (well inside any sensible staleness limit).
HEARTBEAT_S = 1.0


def watch(app: faust.App, heartbeat: Heartbeat) -> ReadyCheck:
    """Stamp `heartbeat` from a timer on the app's event loop; the returned check says ready
    once the timer ran (the worker started) and the app holds partitions."""
    held: set[Any] = set()
    started: list[bool] = []

    @app.timer(interval=HEARTBEAT_S, name="fanout.heartbeat")
    async def beat() -> None:
        heartbeat.beat()
        if not started:
            started.append(True)

    @app.on_partitions_assigned.connect
    async def on_assigned(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        held.update(args[0])  # the set of TPs assigned

    @app.on_partitions_revoked.connect
    async def on_revoked(_app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        held.difference_update(args[0])  # the set of TPs revoked

    def not_ready() -> str | None:
        if not started:
            return "worker not started"
        if not held:
            return "no partitions assigned yet"
        return None

    return not_ready


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print_help("python -m services.fanout: one fan-out worker (registry, request "
                   "expansion).", FanoutSettings, KafkaSettings, OpsSettings)
        return
    configure_logging("fanout")
    settings = FanoutSettings()
    kafka = KafkaSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        rep = replication(kafka)  # waits up to 30 s for a broker that is still starting
    except KafkaException as exc:
        sys.exit(f"fan-out: Kafka at {kafka.bootstrap_servers} did not answer: {exc.args[0]}")
    app = create_app(settings, kafka, rep)
    heartbeat = Heartbeat(OpsSettings().liveness_stale_s)
    not_ready = watch(app, heartbeat)
    if settings.metrics_port:
        OpsServer(settings.metrics_port, heartbeat, not_ready).start()
    # Logging is configure_logging's: faust's own handler and its terminal spinner (escape
    # codes even off a terminal) would break the one JSON-lines format.
    worker = faust.Worker(app, workdir=settings.data_dir, override_logging=False, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
