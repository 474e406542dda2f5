"""`python -m services.fanout`: one fan-out worker, configured from `MDMPUSH_*` variables.

faust's web server stays off; `MDMPUSH_FANOUT_METRICS_PORT` serves Prometheus metrics instead.
SIGTERM/SIGINT stop the worker cleanly (offsets of finished work committed).
"""

from __future__ import annotations

import sys

import faust
from confluent_kafka import KafkaException
from prometheus_client import start_http_server

from services.common.admin import replication
from services.common.config_reference import describe
from services.common.logging_setup import configure_logging
from services.common.settings import KafkaSettings
from services.fanout.app import create_app
from services.fanout.settings import FanoutSettings


def print_help() -> None:
    """`--help`: every setting (variable, default, meaning), without touching Kafka or ports."""
    sys.stdout.write("python -m services.fanout: one fan-out worker (registry, request "
                     "expansion). Configured by environment variables:\n")
    for model in (describe(FanoutSettings), describe(KafkaSettings)):
        for setting in model.settings:
            sys.stdout.write(f"  {setting.variable} (default {setting.default}): "
                             f"{setting.meaning}\n")


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print_help()
        return
    configure_logging("fanout")
    settings = FanoutSettings()
    kafka = KafkaSettings()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        rep = replication(kafka)  # waits up to 30 s for a broker that is still starting
    except KafkaException as exc:
        sys.exit(f"fan-out: Kafka at {kafka.bootstrap_servers} did not answer: {exc.args[0]}")
    app = create_app(settings, kafka, rep)
    # Logging is configure_logging's: faust's own handler and its terminal spinner (escape
    # codes even off a terminal) would break the one JSON-lines format.
    worker = faust.Worker(app, workdir=settings.data_dir, override_logging=False, quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
