"""The gateway over real HTTP on loopback, producing to the real broker."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka import make_producer
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.gateway.app import create_app
from services.gateway.producer import AsyncProducer
from services.gateway.settings import GatewaySettings
from services.gateway.webhook import sign

INTEROP = Path(__file__).resolve().parents[1] / "interop" / "nanomdm"
SECRET = "webhook-secret"

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def _run(kafka_settings: KafkaSettings, topics: Topics, scenario: Scenario) -> None:
    settings = GatewaySettings(port=0, webhook_secret=SecretStr(SECRET),
                               api_key=SecretStr("api-key"), default_tenant="acme")

    async def main() -> None:
        producer = AsyncProducer(make_producer(kafka_settings))
        app = create_app(settings, producer, topics, AvroSerde(), Clock())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await scenario(client)
        finally:
            await runner.cleanup()
            producer.close()

    asyncio.run(main())


def _read(settings: KafkaSettings, topic: str, n: int) -> list[dict[str, Any]]:
    consumer = Consumer(settings.consumer_config(f"{topic}-check"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    serde = AvroSerde()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            out.append(serde.decode(msg.value())[1])
    consumer.close()
    return out


@pytest.mark.kafka
def test_webhook_and_raw_checkins_reach_the_topic(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for name in ("Authenticate.2.json", "DeviceInformation.1.json"):
            body = (INTEROP / "service" / "webhook" / "testdata" / name).read_bytes()
            r = await client.post("/webhook", content=body,
                                  headers={"X-Hmac-Signature": sign(body, SECRET.encode())})
            assert r.status_code == 200, r.text
        for plist in sorted((INTEROP / "mdm" / "testdata").glob("*.plist")):
            r = await client.put("/checkin", content=plist.read_bytes())
            assert r.status_code == 200, r.text

    _run(kafka_settings, topics, scenario)
    records = _read(kafka_settings, topics.checkins, 7)
    assert len(records) == 7
    types = sorted(r["message_type"] for r in records)
    assert types == ["AUTHENTICATE"] * 3 + ["COMMAND_REPORT"] * 2 + ["TOKEN_UPDATE"] * 2
    assert {r["tenant"] for r in records} == {"acme"}


@pytest.mark.kafka
def test_bad_input_gets_4xx_with_reason(kafka_settings: KafkaSettings, topics: Topics) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        body = b'{"checkin_event": {"raw_payload": "bm90IGEgcGxpc3Q="}}'
        unsigned = await client.post("/webhook", content=body)
        assert unsigned.status_code == 401 and "X-Hmac-Signature" in unsigned.json()["error"]
        bad = await client.post("/webhook", content=body,
                                headers={"X-Hmac-Signature": sign(body, SECRET.encode())})
        assert bad.status_code == 400 and "property list" in bad.json()["error"]
        raw = await client.put("/checkin", content=b"<plist><dict>")
        assert raw.status_code == 400 and raw.json()["error"]
        noauth = await client.get("/v1/push/A,B")
        assert noauth.status_code == 401
        wrong = await client.get("/v1/push/A?initiator=robot",
                                 auth=("nanomdm", "api-key"))
        assert wrong.status_code == 400 and "initiator" in wrong.json()["error"]
        missing = await client.get("/nope")
        assert missing.status_code == 404 and missing.json()["error"]

    _run(kafka_settings, topics, scenario)
    assert _count(kafka_settings, topics.checkins) == 0


def _count(settings: KafkaSettings, topic: str) -> int:
    consumer = Consumer(settings.consumer_config(f"{topic}-count"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in parts)
    consumer.close()
    return total


@pytest.mark.kafka
def test_push_api_queues_a_notification_request(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        auth = "Basic " + base64.b64encode(b"nanomdm:api-key").decode()
        r = await client.put("/v1/push/UDID-1,UDID-2?command_type=install_app",
                             headers={"Authorization": auth})
        assert r.status_code == 202, r.text
        body = r.json()
        assert set(body["status"]) == {"UDID-1", "UDID-2"}

    _run(kafka_settings, topics, scenario)
    [request] = _read(kafka_settings, topics.requests, 1)
    assert request["enrollment_ids"] == ["UDID-1", "UDID-2"]
    assert (request["initiator"], request["tenant"], request["source"]) == (
        "USER", "acme", "push-api")
