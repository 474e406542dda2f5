"""`python -m services.gateway`: run the gateway (settings from MDMPUSH_GATEWAY_* and _KAFKA_*)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.config_reference import describe
from services.common.logging_setup import configure_logging
from services.common.serde import serde_for
from services.common.settings import KafkaSettings
from services.gateway.producer import gateway_producer
from services.gateway.server import Gateway, StartupRefused
from services.gateway.settings import GatewaySettings

log = logging.getLogger("services.gateway")


async def _serve(gateway: Gateway) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()


def print_help() -> None:
    """`--help`: every setting (variable, default, meaning), without touching Kafka or ports."""
    sys.stdout.write("python -m services.gateway: HTTP in front of Kafka (webhook, check-ins, "
                     "push API). Configured by environment variables:\n")
    for model in (describe(GatewaySettings), describe(KafkaSettings)):
        for setting in model.settings:
            sys.stdout.write(f"  {setting.variable} (default {setting.default}): "
                             f"{setting.meaning}\n")


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print_help()
        return
    configure_logging("gateway")
    settings, kafka = GatewaySettings(), KafkaSettings()
    producer = gateway_producer(kafka)
    gateway = Gateway(settings, producer, Topics(kafka.topic_prefix), serde_for(kafka),
                      Clock.from_settings())
    try:
        asyncio.run(_serve(gateway))
    except StartupRefused as exc:
        log.critical("gateway not started: %s", exc)
        sys.exit(2)
    finally:
        producer.close()


if __name__ == "__main__":
    main()
