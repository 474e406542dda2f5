"""The replay ledger: a compacted topic of the dead letters already replayed.

Replay is idempotent by record: before replaying, the runner loads the ledger and leaves out
every DLQ record (by its coordinates, `topic/partition/offset`) already in it; after a replayed
record is acknowledged, its ledger entry is written. A job that fails again lands on the DLQ at
a new offset, so it can be replayed again, deliberately. A tombstone for a key (written by hand)
makes that record replayable once more.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.admin import AdminClient

from services.common.admin import create_topics
from services.common.catalogue import Cleanup, Topics, TopicSpec
from services.common.settings import KafkaSettings
from services.dlq.reading import read_since

#: Not (yet) in services/common/catalogue.py: `mdmpush dlq replay` creates it when missing.
LEDGER = TopicSpec("mdm.push.dlq.replayed.v1", "DlqReplay (JSON)", "dlq topic/partition/offset",
                   1, Cleanup.COMPACT)


def ledger_topic(topics: Topics) -> str:
    return topics.name(LEDGER)


def ensure_ledger(kafka: KafkaSettings) -> str:
    """Create the ledger topic if it does not exist; returns its name."""
    create_topics(kafka, [LEDGER])
    return ledger_topic(Topics(kafka.topic_prefix))


def exists(kafka: KafkaSettings, timeout_s: float = 30.0) -> bool:
    name = ledger_topic(Topics(kafka.topic_prefix))
    # All topics: asking for the one topic could make a broker auto-create it.
    return name in AdminClient(kafka.admin_config()).list_topics(timeout=timeout_s).topics


def load_replayed(kafka: KafkaSettings, timeout_s: float = 60.0) -> dict[str, dict[str, Any]]:
    """DLQ coordinates -> ledger entry, for every record replayed so far."""
    replayed: dict[str, dict[str, Any]] = {}
    for msg in read_since(kafka, ledger_topic(Topics(kafka.topic_prefix)), timeout_s=timeout_s,
                          name="dlq-ledger"):
        raw_key, value = msg.key(), msg.value()
        if raw_key is None:
            continue
        key = raw_key.decode("utf-8", "replace")
        if value is None:
            replayed.pop(key, None)
            continue
        try:
            replayed[key] = json.loads(value)
        except ValueError:
            replayed[key] = {}  # unreadable, but its key says the record was replayed
    return replayed


def entry(*, to_topic: str, job_id: str | None, at_ms: int) -> bytes:
    """The ledger value: where the record was replayed to, which job, when."""
    return json.dumps({"to": to_topic, "job_id": job_id, "at": at_ms},
                      separators=(",", ":")).encode()
