"""`python -m services.correlator`: run the check-in correlator.

Settings: `MDMPUSH_CORRELATOR_*` (settings.py), `MDMPUSH_KAFKA_*`, `MDMPUSH_CLOCK_*`.
"""

from __future__ import annotations

import logging

from services.common.clock import Clock
from services.common.serde import serde_for
from services.common.settings import KafkaSettings
from services.correlator.app import Correlator
from services.correlator.metrics import CorrelatorMetrics
from services.correlator.settings import CorrelatorSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings, kafka = CorrelatorSettings(), KafkaSettings()
    metrics = CorrelatorMetrics()
    metrics.serve(settings.metrics_port)
    correlator = Correlator(
        settings, kafka,
        serde_for(kafka),
        Clock.from_settings(), metrics,
    )
    correlator.install_signal_handlers()
    correlator.run()


if __name__ == "__main__":
    main()
