"""The jobs a partition's previous owner pushed after its last commit, read back from the outcomes.

A sender's commits trail its work by a round trip or two (a commit covers only jobs whose records
Kafka has acknowledged, and is itself acknowledged later), so a SIGKILLed sender leaves jobs it
finished past its last acknowledged commit; the next owner of the partition would push them
again — at 200 pushes/s on a loaded broker, 1-2 % of a 2,000-device run. Every outcome that
finishes a job on its own (SENT, FAILED: no retry or DLQ copy goes with it) carries the job's
source in SOURCE_HEADER (``<topic>:<partition>:<offset>``), and every commit says from when the
outcomes of the jobs it does not cover may date (``since_ms``, commit_marks.py). At assignment,
the new owner reads the outcomes topic from the oldest ``since_ms`` of the partitions it took
over that have jobs past their commit, and skips each of those jobs that has such an outcome.

What a crash still repeats: the jobs whose push had gone out and whose outcome Kafka had not yet
acknowledged at the kill — the requests on the wire (APNs answers in milliseconds) and the
answers whose outcome was in the producer's linger or on its way to the broker (a produce round
trip). A RETRYING or DEAD_LETTERED job is not skipped (its copy may not have been written); nor is
a job whose mark did not fit in its commit's metadata and whose outcome is older than
``since_ms`` (at least once holds in every case: a job is skipped only on a written outcome).

Cost: once per assignment, a read of the outcomes written since then (values are not decoded:
only the header is looked at), bounded by READ_TIMEOUT_S; nothing on the hot path but the
header on each outcome.
"""

from __future__ import annotations

import logging
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from services.common.errors import TopicReadError
from services.common.kafka.io import Partition
from services.common.kafka.reader import read_to_end, reader_consumer
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: On SENT and FAILED outcomes: the consumed job record they finish, ``topic:partition:offset``
#: (Kafka topic names cannot contain ':').
SOURCE_HEADER = "mdmpush.job_source"
#: Read from this much before the commit's ``since_ms``: that time and the outcome's Kafka
#: timestamp come from the same host's clock, this covers its steps (NTP).
SLACK_MS = 1_000
#: The whole read (watermarks and outcomes) at most; past it the jobs are pushed again.
READ_TIMEOUT_S = 30.0

#: partition -> (committed offset, since_ms of that commit)
Taken = dict[Partition, tuple[int, int]]


def source_prefix(topic: str, partition: int) -> bytes:
    """SOURCE_HEADER's value for the records of one partition, less the offset."""
    return f"{topic}:{partition}:".encode()


def parse_source(value: bytes) -> tuple[Partition, int] | None:
    """(partition, offset) of a SOURCE_HEADER value; None if it is not one."""
    topic, sep, rest = value.rpartition(b":")
    name, sep2, number = topic.rpartition(b":")
    if not (sep and sep2 and number.isdigit() and rest.isdigit()):
        return None
    return (name.decode("utf-8", "replace"), int(number)), int(rest)


class AlreadySent(Protocol):
    """Reads which jobs past the commits of partitions just taken over have an outcome."""

    def read(self, taken: Taken) -> dict[Partition, set[int]]:
        """partition -> offsets (at or past its committed offset) with a finishing outcome."""
        ...


class OutcomeSources:
    """`AlreadySent` on the outcomes topic (no group: a reader that never commits)."""

    def __init__(self, kafka: KafkaSettings, outcomes_topic: str,
                 timeout_s: float = READ_TIMEOUT_S) -> None:
        self._kafka = kafka
        self._topic = outcomes_topic
        self._timeout_s = timeout_s

    def read(self, taken: Taken) -> dict[Partition, set[int]]:
        try:
            pending = self._with_jobs_past(taken)
            if not pending:
                return {}
            since_ms = min(since for _, since in pending.values()) - SLACK_MS
            return self._scan(pending, since_ms)
        except (TopicReadError, KafkaException) as exc:  # at least once: they are sent again
            log.warning("could not read the outcomes of the partitions taken over (%s): the "
                        "jobs past their commits are pushed again", exc)
            return {}

    def _with_jobs_past(self, taken: Taken) -> Taken:
        """Only partitions holding records past their commit: an idle partition's commit may be
        hours old, and reading from its time would read hours of outcomes for nothing."""
        consumer = reader_consumer(self._kafka, "sender-already-sent")
        try:
            out: Taken = {}
            for (topic, partition), (committed, since) in taken.items():
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                         timeout=self._timeout_s)
                if high > committed:
                    out[(topic, partition)] = (committed, since)
            return out
        finally:
            consumer.close()

    def _scan(self, pending: Taken, since_ms: int) -> dict[Partition, set[int]]:
        found: dict[Partition, set[int]] = {}
        for msg in read_to_end(self._kafka, self._topic, since_ms=since_ms,
                               timeout_s=self._timeout_s, name="sender-already-sent"):
            headers = msg.headers() or ()
            for key, value in headers.items() if isinstance(headers, dict) else headers:
                if key != SOURCE_HEADER or not isinstance(value, bytes):
                    continue
                parsed = parse_source(value)
                if parsed is None:
                    continue
                source, offset = parsed
                position = pending.get(source)
                if position is not None and offset >= position[0]:
                    found.setdefault(source, set()).add(offset)
        return found
