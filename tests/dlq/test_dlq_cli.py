"""`mdmpush dlq` on the real broker, over a DLQ holding what the services write to it: jobs the
sender gave up on (its encoding and headers), and poison records set aside by the fan-out and
the sender (the common dead-letter headers), some of them written two hours ago."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, ResourceType

from services.cli.main import main
from services.common.admin import admin_client
from services.common.catalogue import Topics
from services.common.kafka.dead_letter import dead_letter_headers
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.dlq.ledger import LEDGER, exists, load_replayed
from services.dlq.replay import REPLAY_OF
from services.sdk.publisher import PushRequest
from services.sender.scheduler import ATTEMPT_HEADER
from tests.dlq.topics import end_offsets, read_all
from tests.support.sender_harness import job

SERDE = AvroSerde()
CERT = "com.apple.mgmt.External.0a0b0c0d-1111-2222-3333-444455556666"
POISON = b"\x00\x07payload-7f3e"
HOUR_MS = 3_600_000
REQUEST = PushRequest(tenant="acme", enrollment_ids=["E7", "E8"])


def write_dlq(kafka: KafkaSettings, topics: Topics) -> None:
    """3 jobs exhausted on 500 (one of them two hours ago), 2 on 503 (priority lane), a poison
    request from the fan-out, a poison job from the sender, and a request whose slice the fan-out
    could not expand."""
    now = int(time.time() * 1000)
    producer = Producer(kafka.producer_config(), logger=client_logger("test"))
    jobs = [(0, "BULK", "500 InternalServerError", now - 2 * HOUR_MS),
            (1, "BULK", "500 InternalServerError", now),
            (2, "BULK", "500 InternalServerError", now),
            (3, "PRIORITY", "503 ServiceUnavailable", now),
            (4, "PRIORITY", "503 ServiceUnavailable", now)]
    for n, lane, error, at in jobs:
        record = job(CERT, n, lane=lane, attempt=3, last_error=error)
        producer.produce(topics.dlq, SERDE.encode("PushJob", record), CERT, partition=0,
                         timestamp=at,
                         headers=[(ATTEMPT_HEADER, b"3"),
                                  ("mdmpush.dlq.reason", f"attempts exhausted: {error}".encode())])
    producer.produce(topics.dlq, POISON, "acme", partition=1, timestamp=now,
                     headers=list[tuple[str, str | bytes | None]](
                         dead_letter_headers(topics.requests, 0, 17, "bad magic", "fanout")))
    producer.produce(topics.dlq, b"\x01junk", CERT, partition=1, timestamp=now,
                     headers=list[tuple[str, str | bytes | None]](
                         dead_letter_headers(topics.jobs_bulk, 1, 5, "truncated", "sender")))
    producer.produce(topics.dlq, SERDE.encode("NotificationRequest", REQUEST.to_record()),
                     "acme", partition=1, timestamp=now,
                     headers=list[tuple[str, str | bytes | None]](dead_letter_headers(
                         f"{topics.prefix}mdmpush-fanout-slices", 0, 3,
                         "slice r@0: Kafka refused 1 record(s) permanently", "fanout")))
    assert producer.flush(30) == 0


@pytest.mark.kafka
def test_list_and_show_group_filter_and_mask(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    write_dlq(kafka_settings, cli_env)
    assert main(["dlq", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = sorted((line.split()[0], line.split()[2]) for line in lines[1:-1])
    assert len(lines) == 7 and lines[-1].split()[0] == "8"  # header, 5 groups, total
    assert rows == [("1", "fanout"), ("1", "fanout"), ("1", "sender"), ("2", "sender"),
                    ("3", "sender")]
    assert any("attempts exhausted: 503" in line and cli_env.jobs_priority in line
               for line in lines)

    assert main(["dlq", "list", "--since", "1h"]) == 0  # the old one is not read at all
    assert capsys.readouterr().out.splitlines()[-1].split()[0] == "7"

    assert main(["dlq", "show", "--reason", "503"]) == 0
    shown = capsys.readouterr().out
    assert shown.count(f"{cli_env.dlq}/0/") == 2 and "req/E3" in shown and "req/E4" in shown
    for n in (3, 4):  # tokens and PushMagic never in full
        assert f"{n:064x}" not in shown and f"magic-{n}" not in shown

    assert main(["dlq", "show", "--reason", "bad magic"]) == 0
    poison = capsys.readouterr().out
    assert "bad magic" in poison and f"{cli_env.requests}/0/17" in poison
    assert "payload-7f3e" not in poison and f"{len(POISON)} bytes" in poison

    assert main(["dlq", "show", "--since", "soon"]) == 2  # a clear error, not a traceback
    assert "duration" in capsys.readouterr().err


@pytest.mark.kafka
def test_replay_is_filtered_idempotent_and_dry_run_produces_nothing(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    write_dlq(kafka_settings, cli_env)
    job_topics = [cli_env.jobs_bulk, cli_env.jobs_priority, cli_env.requests]
    before = end_offsets(kafka_settings, job_topics)

    assert main(["dlq", "replay", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would replay 5, already replayed 0, skipped 3" in out
    assert end_offsets(kafka_settings, job_topics) == before
    assert not exists(kafka_settings)  # not even the ledger topic

    assert main(["dlq", "replay", "--reason", "503"]) == 0
    assert "replayed 2, already replayed 0, skipped 0" in capsys.readouterr().out
    replayed = read_all(kafka_settings, cli_env.jobs_priority)
    assert sorted(SERDE.decode_as(m.value(), "PushJob")["job_id"] for m in replayed) == [
        "req/E3", "req/E4"]
    for msg in replayed:
        headers = dict(msg.headers() or [])
        assert headers[ATTEMPT_HEADER] == b"0"
        assert headers[REPLAY_OF] in {f"{cli_env.dlq}/0/{n}".encode() for n in (3, 4)}
        assert SERDE.decode_as(msg.value(), "PushJob")["attempt"] == 0
        assert msg.key() == CERT.encode()

    assert main(["dlq", "replay"]) == 0
    out = capsys.readouterr().out
    assert "replayed 3, already replayed 2, skipped 3" in out
    assert out.count("undecodable") == 2 and "--non-jobs" in out
    assert "a request, not a push job" in out
    assert len(read_all(kafka_settings, cli_env.jobs_bulk)) == 3

    after = end_offsets(kafka_settings, job_topics)
    assert main(["dlq", "replay"]) == 0  # every job is in the ledger now: nothing again
    assert "replayed 0, already replayed 5, skipped 3" in capsys.readouterr().out
    assert end_offsets(kafka_settings, job_topics) == after
    assert len(load_replayed(kafka_settings)) == 5
    assert LEDGER.cleanup.value == "compact"

    assert main(["dlq", "replay", "--non-jobs", "--service", "fanout"]) == 0
    assert "replayed 2," in capsys.readouterr().out
    back = read_all(kafka_settings, cli_env.requests)  # a request goes there, whatever its source
    assert [m.value() for m in back].count(POISON) == 1  # the poison: bytes unchanged
    again = [SERDE.decode_as(m.value(), "NotificationRequest") for m in back
             if m.value() != POISON]
    assert [r["request_id"] for r in again] == [REQUEST.request_id]


def set_topic_config(kafka: KafkaSettings, topic: str, config: dict[str, str]) -> None:
    admin = admin_client(kafka)
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config=config)
    for future in admin.alter_configs([resource]).values():
        future.result(30)


@pytest.mark.kafka
def test_a_replay_kafka_refuses_is_reported_and_stays_replayable(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    write_dlq(kafka_settings, cli_env)
    set_topic_config(kafka_settings, cli_env.jobs_bulk, {"max.message.bytes": "64"})
    assert main(["dlq", "replay", "--lane", "bulk"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 3 and "replayed 0, already replayed 0, skipped 0, failed 3" in out
    assert not load_replayed(kafka_settings)  # nothing marked done that was not put back

    set_topic_config(kafka_settings, cli_env.jobs_bulk, {"max.message.bytes": "1000012"})
    assert main(["dlq", "replay", "--lane", "bulk"]) == 0
    assert "replayed 3, already replayed 0, skipped 0, failed 0" in capsys.readouterr().out
    assert len(read_all(kafka_settings, cli_env.jobs_bulk)) == 3
