"""`python -m services.correlator`: run the check-in correlator.

Settings: `MDMPUSH_CORRELATOR_*` (settings.py), `MDMPUSH_KAFKA_*`, `MDMPUSH_CLOCK_*`,
`MDMPUSH_LOG_*`; `--help` lists them without touching Kafka or ports.
"""

from __future__ import annotations

import logging
import os
import sys

from services.common.clock import Clock
from services.common.config_reference import print_help
from services.common.errors import TopicReadError
from services.common.kafka.dead_letter import DlqLimitExceeded
from services.common.kafka.producer import DeliveryError
from services.common.logging_setup import configure_logging
from services.common.ops_server import Heartbeat, OpsServer, OpsSettings
from services.common.serde import serde_for
from services.common.settings import KafkaSettings
from services.correlator.metrics import CorrelatorMetrics
from services.correlator.runner import CorrelatorRunner
from services.correlator.settings import CorrelatorSettings

log = logging.getLogger("services.correlator")


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print_help("python -m services.correlator: outcomes joined with check-ins; verdicts, "
                   "alerts, re-pushes.", CorrelatorSettings, KafkaSettings, OpsSettings)
        return
    configure_logging("correlator")
    settings, kafka = CorrelatorSettings(), KafkaSettings()
    metrics = CorrelatorMetrics()
    heartbeat = Heartbeat(OpsSettings().liveness_stale_s)
    runner = CorrelatorRunner(settings, kafka, serde_for(kafka), Clock.from_settings(), metrics,
                              heartbeat)
    if settings.metrics_port:
        OpsServer(settings.metrics_port, heartbeat, runner.not_ready, metrics.registry).start()
    runner.install_signal_handlers()
    try:
        runner.run()
    except (DeliveryError, DlqLimitExceeded, TopicReadError) as exc:
        # Nothing past the failure was stored: a restart (once the cause is fixed) resumes there.
        log.critical("correlator stopped: %s", exc)
        code = 1
    else:
        code = 0
    if not runner.closed_in_time:
        # A Kafka client stuck in librdkafka must not keep the process past its grace period.
        logging.shutdown()
        os._exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
