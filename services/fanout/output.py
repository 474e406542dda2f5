"""The expansion's producer: queue a batch without waiting, then await its acknowledgement once.

faust's producer costs tens of microseconds of Python per record; librdkafka queues a record in
a few and batches in C. The agent queues a whole chunk, then awaits `flush()` — run in a thread,
so the event loop (and faust's heartbeats) keep going — before it records the chunk as done and
before faust can commit the slice's offset. A record Kafka refused is produced again until
acknowledged: jobs have deterministic ids, so a repeat is recognisable, a loss is not.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaError, Message, Producer

from services.common.kafka import PARTITION_UA, make_producer
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: librdkafka settings for bulk expansion: bigger batches than the interactive defaults.
BULK_OVERRIDES = {
    "linger.ms": 10,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


class BatchProducer:
    def __init__(self, kafka: KafkaSettings, retry_backoff_s: float = 1.0) -> None:
        self._producer: Producer = make_producer(kafka, **BULK_OVERRIDES)
        self._failed: list[Message] = []
        self._retry_backoff_s = retry_backoff_s

    def produce(
        self, topic: str, value: bytes, key: str | bytes, partition: int | None = None
    ) -> None:
        """Queue one record (`partition` None: the partitioner of the key chooses)."""
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=self._on_delivery,
                    partition=PARTITION_UA if partition is None else partition,
                )
                return
            except BufferError:  # local queue full: serve callbacks, then queue again
                self._producer.poll(0.05)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append(msg)

    async def flush(self) -> None:
        """Return once every queued record is acknowledged (re-producing refused ones)."""
        while True:
            remaining = await asyncio.to_thread(self._producer.flush, 30.0)
            if remaining == 0 and not self._failed:
                return
            failed, self._failed = self._failed, []
            log.warning(
                "%d record(s) refused by Kafka, %d unacknowledged; producing again",
                len(failed), remaining,
            )
            await asyncio.sleep(self._retry_backoff_s)
            for msg in failed:
                # The partition the first attempt went to, chosen or explicit.
                self.produce(msg.topic() or "", msg.value() or b"", msg.key() or b"",
                             msg.partition())
