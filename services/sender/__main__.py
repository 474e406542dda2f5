"""`python -m services.sender`: run one sender (settings from MDMPUSH_SENDER_*, _KAFKA_*,
_OPS_*; `--help` lists them without touching Kafka or ports).

`MDMPUSH_SENDER_METRICS_PORT` serves /metrics, /livez and /readyz (services/common/ops_server.py).

SIGTERM / SIGINT stop consuming, drain the requests in flight and their produces, store the
offsets and close; a second signal is not needed and is ignored.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from services.common.config_reference import print_help
from services.common.logging_setup import configure_logging
from services.common.ops_server import Heartbeat, OpsServer, OpsSettings
from services.common.settings import KafkaSettings
from services.sender.runner import build_sender
from services.sender.settings import SenderSettings


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print_help("python -m services.sender: PushJobs sent to APNs; outcomes, retries.",
                   SenderSettings, KafkaSettings, OpsSettings)
        return
    configure_logging("sender")
    settings = SenderSettings()
    heartbeat = Heartbeat(OpsSettings().liveness_stale_s)
    sender = build_sender(settings, KafkaSettings(), heartbeat=heartbeat)
    if settings.metrics_port:
        OpsServer(settings.metrics_port, heartbeat, sender.not_ready,
                  sender.metrics.registry).start()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: draining", signum)
        sender.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sender.run()
    except Exception:
        logging.getLogger(__name__).exception("sender failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
