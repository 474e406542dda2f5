"""`python -m services.gateway`: run the gateway (settings from MDMPUSH_GATEWAY_* and _KAFKA_*)."""

from __future__ import annotations

import logging

from aiohttp import web

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka import make_producer
from services.common.serde import serde_for
from services.common.settings import KafkaSettings
from services.gateway.app import create_app
from services.gateway.producer import AsyncProducer
from services.gateway.settings import GatewaySettings


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    settings, kafka = GatewaySettings(), KafkaSettings()
    producer = AsyncProducer(make_producer(kafka))
    app = create_app(settings, producer, Topics(kafka.topic_prefix),
                     serde_for(kafka),
                     Clock.from_settings())
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=None)
    finally:
        producer.close()


if __name__ == "__main__":
    main()
