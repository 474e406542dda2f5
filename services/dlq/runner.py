"""Reads the DLQ and replays the chosen dead letters: the only part of services/dlq that talks to
Kafka.

Replay order per batch: the replayed records are produced and acknowledged first, then the
ledger entries of the acknowledged ones. A record Kafka refused gets no ledger entry (it is
reported and stays replayable), so a replay never marks a job done that was not put back. A
crash between the two steps repeats at most one batch on the next run (at-least-once, like the
pipeline itself); two replays must not run at the same time on the same DLQ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import KafkaError, Message

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import PermanentDeliveryError, ReliableProducer
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings
from services.dlq import ledger
from services.dlq.records import DeadLetter, read_dead_letter
from services.dlq.replay import NotReplayable, Replay, plan
from services.dlq.select import Selection

Progress = Callable[[int, int], None]
#: What confluent-kafka's Message.headers() returns (its stub also allows a dict, which it never
#: gives for a consumed record).
Headers = list[tuple[str, bytes | None]]

#: Records produced, then acknowledged, before their ledger entries are written.
BATCH = 500


def read_dead_letters(
    kafka: KafkaSettings, selection: Selection, *, serde: AvroSerde | None = None,
    timeout_s: float = 120.0,
) -> list[DeadLetter]:
    """The DLQ records matching `selection` (read from `since` on when it is given)."""
    serde = serde or serde_for(kafka)
    topics = Topics(kafka.topic_prefix)
    found = []
    for msg in read_to_end(kafka, topics.dlq, since_ms=selection.since_ms, timeout_s=timeout_s,
                           name="dlq"):
        dead = read_dead_letter(
            serde, topic=msg.topic() or topics.dlq, partition=msg.partition() or 0,
            offset=msg.offset() or 0, timestamp_ms=msg.timestamp()[1], key=msg.key(),
            value=msg.value(), headers=cast(Headers | None, msg.headers()),
        )
        if selection.matches(dead, topics):
            found.append(dead)
    return found


@dataclass
class ReplayReport:
    """What a replay did (or, with dry_run, would do) with each selected dead letter."""

    dry_run: bool
    #: Produced and acknowledged (dry run: would be).
    replayed: list[Replay] = field(default_factory=list)
    #: In the ledger already: (dead letter, its ledger entry).
    already: list[tuple[DeadLetter, dict[str, Any]]] = field(default_factory=list)
    skipped: list[NotReplayable] = field(default_factory=list)
    #: Refused by Kafka: (replay, error); not in the ledger, replayable again.
    failed: list[tuple[Replay, str]] = field(default_factory=list)


def replay(
    kafka: KafkaSettings,
    selection: Selection,
    *,
    dry_run: bool = False,
    non_jobs: bool = False,
    progress: Progress | None = None,
    serde: AvroSerde | None = None,
    clock: Clock | None = None,
) -> ReplayReport:
    """Replay the dead letters `selection` chooses, each at most once (see ledger.py)."""
    serde = serde or serde_for(kafka)
    topics = Topics(kafka.topic_prefix)
    # A dry run creates nothing: no ledger topic yet means nothing was replayed yet.
    ledger_topic = ledger.ledger_topic(topics) if dry_run else ledger.ensure_ledger(kafka)
    done = ledger.load_replayed(kafka) if ledger.exists(kafka) else {}
    now_ms = (clock or Clock.from_settings()).now_ms()
    report = ReplayReport(dry_run)
    todo: list[Replay] = []
    for dead in read_dead_letters(kafka, selection, serde=serde):
        if dead.coordinates in done:
            report.already.append((dead, done[dead.coordinates]))
            continue
        planned = plan(dead, topics, serde, now_ms=now_ms, non_jobs=non_jobs)
        if isinstance(planned, NotReplayable):
            report.skipped.append(planned)
        else:
            todo.append(planned)
    if dry_run:
        report.replayed = todo
        return report
    producer = ReliableProducer(kafka, name="dlq-replay")
    try:
        for start in range(0, len(todo), BATCH):
            _replay_batch(producer, ledger_topic, todo[start:start + BATCH], report, now_ms)
            if progress is not None:
                progress(min(start + BATCH, len(todo)), len(todo))
    finally:
        producer.close()
    return report


def _replay_batch(producer: ReliableProducer, ledger_topic: str, batch: list[Replay],
                  report: ReplayReport, now_ms: int) -> None:
    acked: list[Replay] = []

    def delivered(item: Replay, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            acked.append(item)
        else:
            report.failed.append((item, str(err)))

    for item in batch:
        try:
            producer.produce(item.topic, item.value, key=item.key, headers=item.headers,
                             on_delivery=functools.partial(delivered, item))
        except PermanentDeliveryError as exc:  # refused before queueing (e.g. too large)
            report.failed.append((item, str(exc)))
    producer.flush()
    for item in acked:
        job = item.dead.job
        producer.produce(ledger_topic, ledger.entry(to_topic=item.topic, at_ms=now_ms,
                                                    job_id=job["job_id"] if job else None),
                         key=item.dead.coordinates)
    producer.flush()  # raises if a ledger entry was refused: never silent
    report.replayed.extend(acked)
