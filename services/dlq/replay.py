"""What replaying one dead letter produces, or why it is not replayed (pure; runner.py acts).

A push job goes back to the jobs topic of its lane as a fresh job (attempt 0: the attempts it
burned were against a fault that has presumably been fixed), keyed as the sender keyed it, with
provenance headers saying which DLQ record it is and when it was replayed. Anything else on the
DLQ is not a job: it is reported with the reason and left alone unless the operator asks for
`non_jobs` too. Then a request the fan-out set aside (a slice Kafka refused) is published again
on the requests topic, where the fan-out's progress table skips what it already expanded; any
other record goes back, bytes unchanged, to the topic it was taken from (worth it when the cause
was outside the bytes, e.g. a schema registry that was down).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.catalogue import Topics
from services.common.kafka.dead_letter import SOURCE_TOPIC_HEADER
from services.common.serde import AvroSerde
from services.dlq.records import UNKNOWN, DeadLetter, jobs_topic
from services.sender.scheduler import ATTEMPT_HEADER

REPLAY_OF = "mdmpush.replay.of"
REPLAY_AT = "mdmpush.replay.at"

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Replay:
    """One record to produce for one dead letter."""

    dead: DeadLetter
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(frozen=True, slots=True)
class NotReplayable:
    dead: DeadLetter
    why: str


def plan(dead: DeadLetter, topics: Topics, serde: AvroSerde, *, now_ms: int,
         non_jobs: bool = False) -> Replay | NotReplayable:
    """The record replaying `dead` produces, or why it is not replayed."""
    provenance: Headers = [(REPLAY_OF, dead.coordinates.encode()),
                           (REPLAY_AT, str(now_ms).encode())]
    job = dead.job
    if job is not None:
        topic = jobs_topic(job, topics)
        fresh = dict(job, attempt=0)
        key = dead.key or job["topic"].encode()
        return Replay(dead, topic, key, serde.encode("PushJob", fresh, topic),
                      [(ATTEMPT_HEADER, b"0"), *provenance])
    if dead.value is None:
        return NotReplayable(dead, "no value (nothing to replay)")
    if dead.record_name == "NotificationRequest" and dead.record is not None:
        if not non_jobs:
            return NotReplayable(dead, "a request, not a push job: --non-jobs publishes it again "
                                       f"on {topics.requests}")
        return Replay(dead, topics.requests, dead.record["tenant"].encode(),
                      serde.encode("NotificationRequest", dead.record, topics.requests),
                      provenance)
    what = (f"a {dead.record_name}, not a PushJob" if dead.record_name is not None
            else f"undecodable ({dead.decode_error})")
    source = dead.source_topic(topics)
    if not non_jobs:
        return NotReplayable(dead, f"{what}: only push jobs are replayed; --non-jobs puts the "
                                   f"original bytes back on {source}")
    if source == UNKNOWN:
        return NotReplayable(dead, f"{what}, and no {SOURCE_TOPIC_HEADER} header says "
                                   "where it came from")
    return Replay(dead, source, dead.key, dead.value, provenance)
