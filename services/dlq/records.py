"""One dead letter as read from the DLQ: where it sits, why it is there, what it holds.

Two kinds of records share `mdm.push.dlq.v1` (docs/CONTRACTS.md): push jobs the sender gave up on
(attempts exhausted; the value is the PushJob, decodable) and poison records any consumer set
aside (the original bytes, undecodable, with `mdmpush.dlq.source.*` saying where they came
from). This module reads both into one shape without deciding anything about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.common.catalogue import Topics
from services.common.errors import DecodeError
from services.common.kafka.dead_letter import (
    REASON_HEADER,
    SERVICE_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)
from services.common.serde import AvroSerde
from services.sender.scheduler import ATTEMPT_HEADER

UNKNOWN = "?"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A DLQ record: its coordinates, raw bytes and headers, and what could be read from them."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    #: Header name -> value (the last one when a name repeats).
    headers: dict[str, bytes]
    #: Avro record name when the value decodes ("PushJob" for the sender's exhausted jobs).
    record_name: str | None
    record: dict[str, Any] | None
    decode_error: str | None

    @property
    def coordinates(self) -> str:
        """The record's identity on the DLQ: `topic/partition/offset`."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def job(self) -> dict[str, Any] | None:
        return self.record if self.record_name == "PushJob" else None

    @property
    def reason(self) -> str:
        return self._header(REASON_HEADER) or UNKNOWN

    @property
    def service(self) -> str:
        """Who dead-lettered it: the header, else the sender for a job carrying its attempts."""
        named = self._header(SERVICE_HEADER)
        if named:
            return named
        return "sender" if self.job is not None and ATTEMPT_HEADER in self.headers else UNKNOWN

    def source_topic(self, topics: Topics) -> str:
        """Where the record came from: the header, else (a job exhausted by the sender, whose
        copy carries no source headers) the jobs topic of its lane."""
        named = self._header(SOURCE_TOPIC_HEADER)
        if named:
            return named
        job = self.job
        if job is not None:
            return jobs_topic(job, topics)
        return UNKNOWN

    @property
    def source_coordinates(self) -> str | None:
        topic, partition, offset = (self._header(h) for h in
                                    (SOURCE_TOPIC_HEADER, SOURCE_PARTITION_HEADER,
                                     SOURCE_OFFSET_HEADER))
        return f"{topic}/{partition}/{offset}" if topic else None

    def _header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value.decode("utf-8", "replace") if value is not None else None


def jobs_topic(job: dict[str, Any], topics: Topics) -> str:
    """The lane decides the jobs topic (docs/CONTRACTS.md: PRIORITY -> priority, BULK -> bulk)."""
    return topics.jobs_priority if job["lane"] == "PRIORITY" else topics.jobs_bulk


def read_dead_letter(
    serde: AvroSerde,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | str | None]] | None,
) -> DeadLetter:
    """Decode what can be decoded; undecodable bytes are kept as they are, with the reason."""
    by_name: dict[str, bytes] = {}
    for name, raw in headers or ():
        if raw is not None:
            by_name[name] = raw.encode() if isinstance(raw, str) else raw
    record_name: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None
    if value is None:
        error = "no value"
    else:
        try:
            record_name, record = serde.decode(value)
        except DecodeError as exc:
            error = exc.reason
    return DeadLetter(topic, partition, offset, timestamp_ms, key, value, by_name,
                      record_name, record, error)
