"""The replay ledger: a compacted topic (catalogue DLQ_REPLAYED) of the dead letters replayed.

Replay is idempotent by record: before replaying, the runner loads the ledger and leaves out
every DLQ record (by its coordinates, `topic/partition/offset`) already in it; after a replayed
record is acknowledged, its ledger entry is written. A job that fails again lands on the DLQ at
a new offset, so it can be replayed again, deliberately. A tombstone for a key (written by hand)
makes that record replayable once more.
"""

from __future__ import annotations

import json
from typing import Any

from services.common.admin import admin_client, create_topics
from services.common.catalogue import DLQ_REPLAYED as LEDGER
from services.common.catalogue import Topics
from services.common.kafka.compacted import CompactedView
from services.common.settings import KafkaSettings

__all__ = ["LEDGER", "ensure_ledger", "entry", "exists", "ledger_topic", "load_replayed"]


def ledger_topic(topics: Topics) -> str:
    return topics.dlq_replayed


def ensure_ledger(kafka: KafkaSettings) -> str:
    """Create the ledger topic if it does not exist; returns its name."""
    create_topics(kafka, [LEDGER])
    return ledger_topic(Topics(kafka.topic_prefix))


def exists(kafka: KafkaSettings, timeout_s: float = 30.0) -> bool:
    name = ledger_topic(Topics(kafka.topic_prefix))
    # All topics: asking for the one topic could make a broker auto-create it.
    return name in admin_client(kafka).list_topics(timeout=timeout_s).topics


def load_replayed(kafka: KafkaSettings, timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """DLQ coordinates -> ledger entry, for every record replayed so far."""
    view = CompactedView(kafka, ledger_topic(Topics(kafka.topic_prefix)), _decode,
                         name="dlq-ledger")
    try:
        view.load(timeout_s)
        return dict(view.items())
    finally:
        view.close()


def _decode(value: bytes) -> dict[str, Any]:
    """An unreadable entry still says, by its key, that the record was replayed."""
    try:
        found = json.loads(value)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def entry(*, to_topic: str, job_id: str | None, at_ms: int) -> bytes:
    """The ledger value: where the record was replayed to, which job, when."""
    return json.dumps({"to": to_topic, "job_id": job_id, "at": at_ms},
                      separators=(",", ":")).encode()
