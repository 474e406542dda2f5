"""The pure parts of the DLQ tooling: reading a record, filters, groups, what a replay produces,
and masking."""

from __future__ import annotations

import pytest

from services.common.catalogue import Topics
from services.common.kafka.dead_letter import dead_letter_headers
from services.common.serde import AvroSerde
from services.dlq.records import DeadLetter, read_dead_letter
from services.dlq.render import mask, masked, render_dead_letter
from services.dlq.replay import REPLAY_AT, REPLAY_OF, NotReplayable, Replay, plan
from services.dlq.select import Selection, group, parse_since
from services.sdk.publisher import PushRequest
from services.sender.scheduler import ATTEMPT_HEADER
from tests.support.sender_harness import job

SERDE = AvroSerde()
TOPICS = Topics("p.")
CERT = "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000_000


def exhausted(n: int, lane: str = "BULK", reason: str = "500 InternalServerError",
              at: int = NOW) -> DeadLetter:
    """A job the sender dead-lettered, as it writes it (value, key, headers)."""
    record = job(CERT, n, lane=lane, attempt=3, last_error=reason)
    return read_dead_letter(
        SERDE, topic=TOPICS.dlq, partition=0, offset=n, timestamp_ms=at, key=CERT.encode(),
        value=SERDE.encode("PushJob", record),
        headers=[(ATTEMPT_HEADER, b"3"), ("mdmpush.dlq.reason",
                                          f"attempts exhausted: {reason}".encode())])


def poison(offset: int, source: str, service: str) -> DeadLetter:
    return read_dead_letter(
        SERDE, topic=TOPICS.dlq, partition=1, offset=offset, timestamp_ms=NOW, key=b"acme",
        value=b"\x00\x01 not avro", headers=dead_letter_headers(source, 2, 41, "bad magic",
                                                                service))


def test_a_dead_letter_reads_as_job_or_as_poison() -> None:
    dead = exhausted(1, lane="PRIORITY")
    assert dead.job is not None and dead.job["job_id"] == "req/E1"
    assert dead.service == "sender" and dead.reason == "attempts exhausted: 500 InternalServerError"
    assert dead.source_topic(TOPICS) == TOPICS.jobs_priority  # the sender names no source
    assert dead.coordinates == f"{TOPICS.dlq}/0/1"
    bad = poison(7, TOPICS.requests, "fanout")
    assert bad.job is None and bad.decode_error
    assert (bad.service, bad.source_topic(TOPICS)) == ("fanout", TOPICS.requests)
    assert bad.source_coordinates == f"{TOPICS.requests}/2/41"


def test_filters_and_groups() -> None:
    dead = [exhausted(1), exhausted(2), exhausted(3, reason="503 ServiceUnavailable"),
            exhausted(4, lane="PRIORITY", at=NOW - 7_200_000), poison(5, TOPICS.requests, "fanout")]
    groups = group(dead, TOPICS)
    assert [(g.count, g.jobs, g.service, g.source_topic) for g in groups] == [
        (2, 2, "sender", TOPICS.jobs_bulk),  # 500, bulk lane
        (1, 1, "sender", TOPICS.jobs_priority),  # 500, priority lane
        (1, 1, "sender", TOPICS.jobs_bulk),  # 503
        (1, 0, "fanout", TOPICS.requests)]
    assert groups[1].first_ms == groups[1].last_ms == NOW - 7_200_000

    def chosen(selection: Selection) -> list[int]:
        return [d.offset for d in dead if selection.matches(d, TOPICS)]

    assert chosen(Selection(reason="serviceunavailable")) == [3]
    assert chosen(Selection(topic="mdm.push.jobs.priority.v1")) == [4]  # prefix optional
    assert chosen(Selection(topic=TOPICS.jobs_priority)) == [4]
    assert chosen(Selection(service="fanout")) == [5]
    assert chosen(Selection(since_ms=NOW - 3_600_000)) == [1, 2, 3, 5]
    assert chosen(Selection(job_id="req/E2")) == [2]
    assert chosen(Selection(lane="priority")) == [4]
    assert chosen(Selection(reason="500", topic="mdm.push.jobs.bulk.v1")) == [1, 2]


def test_parse_since() -> None:
    assert parse_since("90m", NOW) == NOW - 90 * 60_000
    assert parse_since("2h", NOW) == NOW - 7_200_000
    assert parse_since("1700000000000", NOW) == 1_700_000_000_000
    assert parse_since("2023-11-14T22:13:20Z", NOW) == 1_700_000_000_000
    assert parse_since("2023-11-14T22:13:20", NOW) == 1_700_000_000_000  # UTC by default
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday", NOW)


def test_replaying_a_job_resets_its_attempts_and_names_its_origin() -> None:
    dead = exhausted(1, lane="PRIORITY")
    replay = plan(dead, TOPICS, SERDE, now_ms=NOW)
    assert isinstance(replay, Replay)
    assert replay.topic == TOPICS.jobs_priority and replay.key == CERT.encode()
    fresh = SERDE.decode_as(replay.value, "PushJob")
    assert fresh["attempt"] == 0
    assert {k: v for k, v in fresh.items() if k != "attempt"} == {
        k: v for k, v in (dead.job or {}).items() if k != "attempt"}
    assert dict(replay.headers) == {ATTEMPT_HEADER: b"0", REPLAY_OF: dead.coordinates.encode(),
                                    REPLAY_AT: str(NOW).encode()}
    bulk = plan(exhausted(2), TOPICS, SERDE, now_ms=NOW)
    assert isinstance(bulk, Replay) and bulk.topic == TOPICS.jobs_bulk


def test_what_is_not_a_job_is_skipped_with_the_reason_unless_asked_for() -> None:
    bad = poison(5, TOPICS.requests, "fanout")
    skipped = plan(bad, TOPICS, SERDE, now_ms=NOW)
    assert isinstance(skipped, NotReplayable)
    assert "undecodable" in skipped.why and "--non-jobs" in skipped.why
    raw = plan(bad, TOPICS, SERDE, now_ms=NOW, non_jobs=True)
    assert isinstance(raw, Replay)
    assert (raw.topic, raw.key, raw.value) == (TOPICS.requests, b"acme", bad.value)
    assert dict(raw.headers)[REPLAY_OF] == bad.coordinates.encode()
    nowhere = read_dead_letter(SERDE, topic=TOPICS.dlq, partition=0, offset=9, timestamp_ms=NOW,
                               key=None, value=b"junk", headers=[])
    unknown = plan(nowhere, TOPICS, SERDE, now_ms=NOW, non_jobs=True)
    assert isinstance(unknown, NotReplayable) and "source.topic" in unknown.why


def test_a_request_the_fanout_set_aside_is_published_again_only_when_asked() -> None:
    request = PushRequest(tenant="acme", enrollment_ids=["E1", "E2"]).to_record(NOW)
    slices = "p.mdmpush-fanout-slices"  # where the fan-out read it: its internal topic
    dead = read_dead_letter(
        SERDE, topic=TOPICS.dlq, partition=0, offset=3, timestamp_ms=NOW, key=b"acme",
        value=SERDE.encode("NotificationRequest", request),
        headers=dead_letter_headers(slices, 0, 8, "slice r@0: Kafka refused", "fanout"))
    skipped = plan(dead, TOPICS, SERDE, now_ms=NOW)
    assert isinstance(skipped, NotReplayable) and "a request, not a push job" in skipped.why
    again = plan(dead, TOPICS, SERDE, now_ms=NOW, non_jobs=True)
    assert isinstance(again, Replay)
    assert (again.topic, again.key) == (TOPICS.requests, b"acme")  # not the internal topic
    decoded = SERDE.decode_as(again.value, "NotificationRequest")
    assert {k: decoded[k] for k in request} == request


def test_show_masks_tokens_and_push_magic() -> None:
    token = "ab" * 32
    record = job(CERT, 1, token=token, push_magic="5F3C1E2D-0000-4A4B-9C9D-1234567890AB")
    dead = read_dead_letter(SERDE, topic=TOPICS.dlq, partition=0, offset=1, timestamp_ms=NOW,
                            key=CERT.encode(), value=SERDE.encode("PushJob", record),
                            headers=[])
    text = render_dead_letter(dead, TOPICS)
    assert token not in text and "5F3C1E2D-0000-4A4B-9C9D-1234567890AB" not in text
    assert f"{mask(token)}" in text and "req/E1" in text
    assert mask(token) == "abab…(64)…abab"
    assert mask("short") == "…(5)"
    assert masked({"evidence": {"token_hex": token}}) == {"evidence": {"token_hex": mask(token)}}
    garbage = poison(3, TOPICS.requests, "fanout")
    shown = render_dead_letter(garbage, TOPICS)
    assert "not avro" not in shown and "bytes, sha256" in shown
