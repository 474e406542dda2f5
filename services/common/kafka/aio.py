"""An asyncio face on `ReliableProducer`: `await send(...)` returns once Kafka acknowledged.

The gateway answers a webhook only after its event is durable, so a 200 means "not lost". A
background thread polls the producer so delivery callbacks run promptly; they resolve the
awaiting future on the event loop. A full local queue is waited out with `asyncio.sleep`, never by
blocking the loop.
"""

from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, Message

from services.common.kafka.producer import Headers, ReliableProducer, delivery_error

#: How long send() sleeps before queueing again when librdkafka's local queue is full.
QUEUE_FULL_WAIT_S = 0.01


class AsyncProducer:
    """`await send()` per record; errors arrive as DeliveryError / PermanentDeliveryError."""

    def __init__(self, producer: ReliableProducer) -> None:
        self.producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._poll_loop, name=f"kafka-poll-{producer.name}", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record and return once Kafka acknowledged it (raise if it refused it)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            error = None if err is None else delivery_error(err, topic)
            loop.call_soon_threadsafe(_resolve, done, error)

        while True:
            try:
                self.producer.produce(topic, value, key, headers, partition, on_delivery,
                                      block=False)
                break
            except BufferError:  # local queue full: let the poll thread drain it
                self.producer.queue_full_waits += 1
                await asyncio.sleep(QUEUE_FULL_WAIT_S)
        await done

    async def flush(self) -> None:
        """Wait (in a thread) for everything queued; raises like `ReliableProducer.flush`."""
        await asyncio.to_thread(self.producer.flush)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop polling, flush and release the producer."""
        self._stop.set()
        self._thread.join()
        self.producer.close(timeout_s)


def _resolve(fut: asyncio.Future[None], error: Exception | None) -> None:
    if fut.done():  # the awaiting task was cancelled
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
