"""`python -m services.correlator`: run the check-in correlator.

Settings: `MDMPUSH_CORRELATOR_*` (settings.py), `MDMPUSH_KAFKA_*`, `MDMPUSH_CLOCK_*`.
"""

from __future__ import annotations

import logging
import os
import sys

from services.common.clock import Clock
from services.common.errors import TopicReadError
from services.common.kafka.dead_letter import DlqLimitExceeded
from services.common.kafka.producer import DeliveryError
from services.common.serde import serde_for
from services.common.settings import KafkaSettings
from services.correlator.metrics import CorrelatorMetrics
from services.correlator.runner import CorrelatorRunner
from services.correlator.settings import CorrelatorSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings, kafka = CorrelatorSettings(), KafkaSettings()
    metrics = CorrelatorMetrics()
    metrics.serve(settings.metrics_port)
    runner = CorrelatorRunner(settings, kafka, serde_for(kafka), Clock.from_settings(), metrics)
    runner.install_signal_handlers()
    try:
        runner.run()
    except (DeliveryError, DlqLimitExceeded, TopicReadError) as exc:
        # Nothing past the failure was stored: a restart (once the cause is fixed) resumes there.
        logging.getLogger("services.correlator").critical("correlator stopped: %s", exc)
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
