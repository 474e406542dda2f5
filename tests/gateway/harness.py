"""A real gateway (services.gateway.server.Gateway) on loopback, producing to the real broker.

It runs in its own thread and event loop, so tests talk to it with ordinary blocking clients
(httpx, schemathesis' requests) exactly as an MDM server would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.gateway.producer import AsyncProducer, gateway_producer
from services.gateway.server import Gateway
from services.gateway.settings import GatewaySettings

INTEROP = Path(__file__).resolve().parents[1] / "interop" / "nanomdm"
DEVICE_PLISTS = INTEROP / "mdm" / "testdata"
WEBHOOK_EVENTS = INTEROP / "service" / "webhook" / "testdata"

ACME_KEY = "acme-api-key-0123456789"
ACME_ROTATED_KEY = "acme-api-key-rotated-9876"  # configured only as its SHA-256 digest
ACME_SECRET = "acme-webhook-secret-0001"
GLOBEX_KEY = "globex-api-key-0123456789"
GLOBEX_SECRET = "globex-webhook-secret-01"
OPS_KEY = "operator-api-key-012345678"

PRINCIPALS: dict[str, Any] = {"principals": [
    {"name": "acme-mdm", "tenants": ["acme"],
     "api_keys": [ACME_KEY, "sha256:" + hashlib.sha256(ACME_ROTATED_KEY.encode()).hexdigest()],
     "webhook_secrets": [ACME_SECRET]},
    {"name": "globex-mdm", "tenants": ["globex"], "api_keys": [GLOBEX_KEY],
     "webhook_secrets": [GLOBEX_SECRET]},
    {"name": "ops", "tenants": ["acme", "globex"], "api_keys": [OPS_KEY]},
]}


def basic(key: str, user: str = "nanomdm") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


@dataclass
class RunningGateway:
    base_url: str
    ops_url: str
    settings: GatewaySettings

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


def gateway_settings(**overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {"port": 0, "ops_port": 0,
                              "principals": SecretStr(json.dumps(PRINCIPALS)),
                              "rate_per_s": 1000.0, "rate_burst": 1000}
    values.update(overrides)
    return GatewaySettings(**values)


@contextmanager
def running_gateway(kafka: KafkaSettings, topics: Topics,
                    settings: GatewaySettings | None = None,
                    producer: AsyncProducer | None = None) -> Iterator[RunningGateway]:
    """Start the gateway in a thread; yields its URLs; stops it and its producer afterwards."""
    settings = settings or gateway_settings()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True)
    thread.start()
    producer = producer or gateway_producer(kafka)
    gateway = Gateway(settings, producer, topics, AvroSerde(), Clock())
    try:
        public, ops = asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(30)
        scheme = "https" if settings.tls_cert_file else "http"
        yield RunningGateway(f"{scheme}://127.0.0.1:{public}", f"http://127.0.0.1:{ops}",
                             settings)
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        producer.close()


def read_records(kafka: KafkaSettings, topic: str, n: int, timeout_s: float = 15) -> list[
        dict[str, Any]]:
    """The first `n` records of `topic` (fewer if they do not arrive in time), decoded."""
    consumer = Consumer(kafka.consumer_config(f"{topic}-check"), logger=client_logger("test"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    serde = AvroSerde()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            out.append(serde.decode(msg.value())[1])
    consumer.close()
    return out


def count_records(kafka: KafkaSettings, topic: str) -> int:
    """How many records `topic` holds (sum of end offsets: the topics are fresh per test)."""
    consumer = Consumer(kafka.consumer_config(f"{topic}-count"), logger=client_logger("test"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts)
    consumer.close()
    return total
