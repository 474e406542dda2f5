"""`python -m services.fanout`: one fan-out worker, configured from `MDMPUSH_*` variables.

faust's web server stays off; `MDMPUSH_FANOUT_METRICS_PORT` serves Prometheus metrics instead.
SIGTERM/SIGINT stop the worker cleanly (offsets of finished work committed).
"""

from __future__ import annotations

import faust
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
    app = create_app(settings, kafka, replication(kafka))
    worker = faust.Worker(app, loglevel=settings.log_level, workdir=settings.data_dir)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
