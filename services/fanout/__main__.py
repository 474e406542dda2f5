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
from services.common.settings import KafkaSettings
from services.fanout.app import create_app
from services.fanout.settings import FanoutSettings


def main() -> None:
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
    worker = faust.Worker(app, loglevel=settings.log_level, workdir=settings.data_dir)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
