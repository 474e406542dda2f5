"""A request whose jobs Kafka refuses for good (too large for the jobs topic) goes to the DLQ, and
every target it leaves without a record gets a DEAD_LETTERED outcome: each (request, target) ends
in exactly one terminal state, and the expander goes on with the next request.

The Expander on the real broker (its own producers, DLQ writer and views; the tables are the
mappings the agent passes it), not a whole worker: a faust worker's start-up alone takes longer
than this module may. A small max.message.bytes on the test's own jobs topic makes the refusal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic
from prometheus_client import REGISTRY

from services.common.accounting import Accounting
from services.common.admin import admin_client
from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import DeliveryError
from services.common.kafka.reader import read_to_end
from services.common.settings import KafkaSettings
from services.fanout.activity import ActivityBook
from services.fanout.changelog import TableWriter
from services.fanout.dead_letters import DeadLetters
from services.fanout.expand import Expander, Target
from services.fanout.faust_compat import App
from services.fanout.jobs import Lane
from services.fanout.output import BatchProducer, Refusal
from services.fanout.policies import ShardBook
from services.fanout.registry import Record, apply_checkin
from services.fanout.store import SCHEME
from tests.fanout.harness import AT, SERDE, enroll, request

pytestmark = pytest.mark.kafka

#: Under the size of any job of an APS request with PAYLOAD (the broker refuses its batch).
SMALL_TOPIC_BYTES = "2000"
#: Random bytes: lz4 cannot shrink the job under the topic's limit; within the 4,096 bytes a
#: request may carry (services/common/limits.py).
PAYLOAD = json.dumps({"aps": {"blob": base64.b64encode(os.urandom(1_650)).decode()}})
#: E01 has no record (SKIPPED unknown_enrollment, in the first chunk); E02-E09 are pushable.
IDS = [f"E{n:02d}" for n in range(1, 10)]
CHUNK = 4
WINDOW_MS = 60_000


@dataclass
class Fixture:
    kafka: KafkaSettings
    topics: Topics
    expander: Expander
    carriers: TableWriter

    def expand(self, key: str, req: dict[str, Any]) -> None:
        message = {"request": req, "enrollment_ids": req["enrollment_ids"]}
        asyncio.run(self.expander.expand(key, 0, message, (self.topics.requests, 0, 7)))

    def read(self, topic: str, schema: str) -> list[dict[str, Any]]:
        return [SERDE.decode_as(m.value(), schema) for m in read_to_end(self.kafka, topic)]


def _dead_lettered_slices() -> float:
    return REGISTRY.get_sample_value("mdmpush_fanout_dead_lettered_slices_total") or 0.0


def _record(eid: str) -> Record:
    record: Record | None = None
    for event in enroll(eid):
        record = apply_checkin(record, event, AT) or record
    assert record is not None
    return record


def _create(kafka: KafkaSettings, topics: dict[str, dict[str, str]]) -> None:
    """Create the topics (name -> config) in one request: a loaded broker takes seconds each."""
    admin = admin_client(kafka)
    futures = admin.create_topics(
        [NewTopic(name, 1, 1, config=config) for name, config in topics.items()])
    for future in futures.values():
        future.result(60)


def _expander(kafka: KafkaSettings, topics: Topics, carriers: TableWriter,
              carriers_out: BatchProducer, shards: ShardBook, activity: ActivityBook,
              window_ms: int | None) -> Expander:
    return Expander(
        registry={eid: _record(eid) for eid in IDS[1:]}, progress={},
        producer=BatchProducer(kafka, name="test-jobs"), shards=shards, serde=SERDE,
        topics=topics, clock=Clock(), partitions=1, chunk_size=CHUNK,
        dead_letters=DeadLetters(kafka, topics.dlq), activity=activity, carriers=carriers,
        carriers_out=carriers_out, coalesce_window_ms=window_ms,
    )


@pytest.fixture
def worlds(kafka_settings: KafkaSettings) -> Iterator[tuple[Fixture, Fixture]]:
    """Two expanders: one whose outcomes topic takes the DEAD_LETTERED outcomes, one whose
    outcomes topic refuses them too (its topics under a second prefix in the test's own)."""
    kafka = kafka_settings
    refusing_kafka = kafka.model_copy(update={"topic_prefix": f"{kafka.topic_prefix}refusing."})
    topics, refusing = Topics(kafka.topic_prefix), Topics(refusing_kafka.topic_prefix)
    app = App(f"{kafka.topic_prefix}fanout", store=f"{SCHEME}://", web_enabled=False,
              autodiscover=False)
    carriers = TableWriter(app.Table("carriers", partitions=1))
    small = {"max.message.bytes": SMALL_TOPIC_BYTES}
    _create(kafka, {
        topics.jobs_bulk: small, topics.outcomes: {}, topics.dlq: {}, carriers.changelog: {},
        refusing.jobs_bulk: small, refusing.outcomes: {"max.message.bytes": "100"},
        refusing.dlq: {},
    })
    # Not started: no policy (one shard per topic) and no activity state (every device active).
    shards = ShardBook(kafka, topics.config, SERDE)
    activity = ActivityBook(kafka, topics.activity, SERDE)
    carriers_out = BatchProducer(kafka, name="test-carriers")
    yield (Fixture(kafka, topics, _expander(kafka, topics, carriers, carriers_out, shards,
                                            activity, WINDOW_MS), carriers),
           Fixture(refusing_kafka, refusing, _expander(refusing_kafka, refusing, carriers,
                                                       carriers_out, shards, activity, None),
                   carriers))
    assert asyncio.run(carriers_out.flush()) == []
    shards.view.close()
    activity.view.close()


def test_every_target_of_a_refused_request_ends_in_one_terminal_state(
    worlds: tuple[Fixture, Fixture],
) -> None:
    world, refusing = worlds
    slices = _dead_lettered_slices()
    huge = request("r-huge", ids=IDS, initiator="ADMIN", kind="APS", aps_payload=PAYLOAD)
    world.expand("r-huge:0", huge)

    mine = [o for o in world.read(world.topics.outcomes, "PushOutcome")
            if o["request_id"] == "r-huge"]
    book = Accounting()
    for outcome in mine:
        book.add(outcome)
    assert book.missing(IDS) == [] and book.doubled() == {}, mine
    states = {eid: (o["state"], o["reason"]) for eid, (o,) in book.terminal.items()}
    # The first chunk: E01's SKIPPED was acknowledged (it stays its one outcome); the jobs of
    # E02-E04 were refused with Kafka's reason; the rest of the slice was never expanded.
    assert states.pop("E01") == ("SKIPPED", "unknown_enrollment")
    for eid in IDS[1:CHUNK]:
        state, reason = states.pop(eid)
        assert state == "DEAD_LETTERED" and "MSG_SIZE_TOO_LARGE" in reason, reason
    for eid in IDS[CHUNK:]:
        state, reason = states.pop(eid)
        assert state == "DEAD_LETTERED", state
        assert reason.startswith("request dead-lettered, not expanded: ") and \
            "MSG_SIZE_TOO_LARGE" in reason, reason
    assert all(o["lane"] == "BULK" and o["job_id"] == f"r-huge/{o['enrollment_id']}"
               for o in mine)
    assert _dead_lettered_slices() == slices + 1
    # The request is on the DLQ whole; no job of it went anywhere, no carrier stays for one.
    (dead,) = list(read_to_end(world.kafka, world.topics.dlq))
    assert dict(dead.headers() or [])["mdmpush.request_id"] == b"r-huge"
    assert world.read(world.topics.jobs_bulk, "PushJob") == []
    assert world.carriers.data == {}
    assert world.expander.progress["r-huge:0"]["done"]

    # The same slice again (a redelivery) is recognised: nothing is written twice.
    world.expand("r-huge:0", huge)
    assert len([o for o in world.read(world.topics.outcomes, "PushOutcome")
                if o["request_id"] == "r-huge"]) == len(mine)

    # The expander goes on: the next request's jobs are produced (and carried).
    world.expand("r-next:0", request("r-next", ids=["E02", "E03"], initiator="ADMIN"))
    jobs = world.read(world.topics.jobs_bulk, "PushJob")
    assert sorted(j["job_id"] for j in jobs) == ["r-next/E02", "r-next/E03"]
    assert set(world.carriers.data) == {"E02", "E03"}

    # Where Kafka refuses the DEAD_LETTERED outcomes too, the expander raises (the agent exits
    # without committing, app.py) and the slice is not marked done: it is read again.
    with pytest.raises(DeliveryError, match="DEAD_LETTERED outcome"):
        refusing.expand("r-huge:0", huge)
    assert "r-huge:0" not in refusing.expander.progress


def test_a_refused_record_is_mapped_to_its_targets() -> None:
    """A refused job names only its key (shared by its chunk's jobs of that certificate); a
    refused SKIPPED outcome its enrollment. Where Kafka refused only some of a key's jobs, which
    were pushed is unknown: all of them get the outcome rather than none (no Kafka needed)."""
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="unit.")
    topics = Topics(kafka.topic_prefix)
    app = App("unit-fanout", store=f"{SCHEME}://", web_enabled=False, autodiscover=False)
    expander = _expander(kafka, topics, TableWriter(app.Table("carriers", partitions=1)),
                         BatchProducer(kafka, name="unit-carriers"),
                         ShardBook(kafka, topics.config, SERDE),
                         ActivityBook(kafka, topics.activity, SERDE), None)
    lane = Lane.of(request("r", initiator="ADMIN"), topics)
    chunk: list[Target] = [(eid, None) for eid in ("E01", "E02", "E03", "E04", "E05")]
    refused = [Refusal(lane.jobs_topic, b"cert-a", "too large"),
               Refusal(topics.outcomes, b"E03", "outcome too large"),
               Refusal(lane.jobs_topic, b"cert-b", "batch too large")]
    jobs_by_key = {"cert-a": ["E01"], "cert-b": ["E02", "E05"], "cert-c": ["E04"]}
    assert expander._refused_targets(lane, chunk, refused, jobs_by_key, 0) == [
        ("E01", "too large"), ("E02", "batch too large"), ("E03", "outcome too large"),
        ("E05", "batch too large")]
