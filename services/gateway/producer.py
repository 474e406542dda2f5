"""An asyncio face on confluent-kafka's producer: `await send(...)` returns once Kafka acked.

The gateway answers a webhook only after its event is durable, so a 200 means "not lost".
A background thread polls the producer so delivery callbacks run promptly.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, Message, Producer

from services.common.kafka import DeliveryError


class AsyncProducer:
    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, value: bytes, key: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                loop.call_soon_threadsafe(_resolve, done, None)
            else:
                loop.call_soon_threadsafe(_resolve, done, DeliveryError(str(err)))

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: back-pressure instead of dropping
                await asyncio.sleep(0.01)
        await done

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join()
        self._producer.flush(timeout_s)


def _resolve(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
