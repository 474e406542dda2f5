"""The fan-out's dead-letter topic: records it cannot use, set aside before their offset moves.

The shared `DeadLetterWriter`, plus a way for an agent to await the acknowledgement: the record
is written and acknowledged before the agent moves on, so the input's offset is never committed
past a record that is neither processed nor in the DLQ. While the DLQ topic does not exist the
writer holds the record and the agent waits here, writing it again with the writer's back-off,
instead of exiting (a restarted worker would only meet the same missing topic). The `DlqLimit`
(MDMPUSH_KAFKA_DLQ_*) stops the agent with DlqLimitExceeded when most of what it reads is poison
(a wrong schema, not bad records).
"""

from __future__ import annotations

import asyncio
import time

from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.producer import DeliveryError, ReliableProducer
from services.common.settings import KafkaSettings

#: The `service` header of the fan-out's dead letters.
SERVICE = "fanout"
#: Longest a dead letter may stay unanswered: past librdkafka's 30 s wait for the metadata of a
#: topic it does not know (topic.metadata.propagation.max.ms), after which it reports the topic
#: missing (the letter is then held, not failed).
ACK_WAIT_S = 45.0


class DeadLetters(DeadLetterWriter):
    """`consumed()` per input record read; `write(...)` then `await acknowledged()` per record
    set aside."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._reliable = ReliableProducer(kafka, name="fanout-dlq")
        super().__init__(self._reliable, topic, service=SERVICE,
                         limit=DlqLimit.from_settings(kafka))

    async def acknowledged(self) -> None:
        """Return once every dead letter written so far is written (DeliveryError if Kafka
        refused one, or did not answer within ACK_WAIT_S); held ones are written again with
        back-off until their topic is there."""
        while True:
            await asyncio.to_thread(self._answered, ACK_WAIT_S)
            self.check()
            if not self.held:
                return
            await asyncio.sleep(self.resend_in())
            self.resend_due()

    def _answered(self, timeout_s: float) -> None:
        """Wait until every letter produced has its delivery result served."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            self._reliable.client.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        if self.in_flight:
            raise DeliveryError(f"{self.in_flight} dead letter(s) not acknowledged by Kafka "
                                f"within {timeout_s:.0f} s")
