"""`python -m services.sender`: run one sender (settings from MDMPUSH_SENDER_* and _KAFKA_*).

SIGTERM / SIGINT stop consuming, drain the requests in flight and their produces, store the
offsets and close; a second signal is not needed and is ignored.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from services.common.logging_setup import configure_logging
from services.common.settings import KafkaSettings
from services.sender.runner import build_sender
from services.sender.settings import SenderSettings


def main() -> None:
    configure_logging("sender")
    sender = build_sender(SenderSettings(), KafkaSettings())

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
