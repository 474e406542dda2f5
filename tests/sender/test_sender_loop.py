"""The sender loop's rules without a broker: in-memory Kafka I/O, a fake APNs pool, stepped clocks.

The integration proof (real broker, the simulator over TLS, real processes) is test_sender_flow.py
and test_sender_faults.py; these pin each rule down on its own, step by step.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from confluent_kafka import KafkaError

from services.common.kafka.dead_letter import (
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    DlqLimit,
)
from services.common.kafka.io import Position
from services.common.kafka.producer import PermanentDeliveryError
from services.common.policy import PushPolicy
from services.sender.already_sent import SOURCE_HEADER
from services.sender.apns.types import TransportError
from services.sender.commit_marks import decode_marks, decode_since, encode_marks
from services.sender.job import Lane
from services.sender.pauses import PauseReason
from services.sender.scheduler import ATTEMPT_HEADER, NOT_BEFORE_HEADER
from services.sender.service import SenderStopped
from tests.sender.loop_fakes import (
    CERT,
    OTHER,
    RETRY_200,
    RETRY_500,
    SERDE,
    TOPICS,
    Loop,
    job,
    make_loop,
    not_before,
)

BULK_TOPIC = TOPICS.jobs_bulk
PRIORITY_TOPIC = TOPICS.jobs_priority
SOURCE = (BULK_TOPIC, 0)


def headers_of(record: object) -> dict[str, bytes]:
    return dict(record.headers() or [])  # type: ignore[attr-defined]


def finish(loop: Loop, status: int = 200, steps: int = 2) -> None:
    """Answer everything in flight and let the loop write and commit it."""
    loop.pool.answer(status)
    loop.step(steps, advance_s=0.01)


# -- flow and commits ------------------------------------------------------------------------------
def test_jobs_are_sent_and_their_offset_committed_only_once_outcomes_are_acknowledged() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, *(job(n) for n in range(3)))
    loop.step()
    assert len(loop.pool.waiting) == 3 and loop.sender.in_flight == 3
    loop.io.hold_deliveries = True  # Kafka has not acknowledged the outcomes yet
    finish(loop)
    assert loop.states() == {"SENT": 3}
    assert loop.committed(BULK_TOPIC) < 0  # written, not acknowledged: nothing committed
    loop.io.release_deliveries()
    loop.step(2, advance_s=0.01)
    assert loop.committed(BULK_TOPIC) == 3
    sent = loop.outcomes()
    assert {o["job_id"] for o in sent} == {"req/E0", "req/E1", "req/E2"}
    assert all(o["status"] == 200 and o["lane"] == "BULK" for o in sent)


def test_the_offset_stops_at_the_oldest_unfinished_job_and_marks_the_rest_done() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, job(0, topic=OTHER), *(job(n) for n in range(1, 4)))
    loop.step()
    loop.pool.answer(200, topic=CERT)  # offsets 1-3 finish, 0 stays in flight
    answered_ms = loop.clock.epoch_ms()
    loop.step(2, advance_s=0.01)
    last = loop.io.commits[-1]
    assert last.offset == 0 and decode_marks(0, last.metadata) == {1, 2, 3}
    # Offset 0 has produced nothing yet: its outcome will date from the commit or later.
    assert answered_ms < (decode_since(last.metadata) or 0) <= loop.clock.epoch_ms()
    finish(loop)
    assert loop.committed(BULK_TOPIC) == 4


def test_a_partition_taken_over_skips_the_jobs_its_previous_owner_wrote_an_outcome_for() -> None:
    first = make_loop(max_in_flight=10, priority_reserve=0)
    first.produce(BULK_TOPIC, *(job(n) for n in range(6)))
    first.step()
    first.pool.answer(200, count=1)
    first.step(2, advance_s=0.01)
    assert first.committed(BULK_TOPIC) == 1
    first.io.fail_commits = "the broker is slow"  # answered, written, not yet committed...
    first.pool.answer(200, count=3)
    first.pool.answer(503, count=1)  # a retry: its copy may not be written, never skipped
    first.step(2, advance_s=0.01)
    assert first.committed(BULK_TOPIC) == 1  # ...when the process dies (5 still on the wire)
    second = make_loop(broker=first.broker, already_sent=True, max_in_flight=10,
                       priority_reserve=0)
    second.step()
    assert sorted(r.token_hex for r in second.pool.waiting) == [f"{n:064x}" for n in (4, 5)]
    assert second.sender.metrics.skipped_already_sent._value.get() == 3
    finish(second)
    assert second.committed(BULK_TOPIC) == 6


def test_a_retry_copy_or_a_dead_letter_is_not_taken_as_already_sent() -> None:
    loop = make_loop(default_max_attempts=1)
    loop.produce(BULK_TOPIC, job(0), job(1))
    loop.step()
    loop.pool.answer(503, count=1)  # attempts exhausted: DEAD_LETTERED + DLQ copy
    loop.pool.answer(200, count=1)
    loop.step(2, advance_s=0.01)
    marked = {o["state"]: headers_of(r).get(SOURCE_HEADER) for r, o in zip(
        loop.broker.records(TOPICS.outcomes), loop.outcomes(), strict=True)}
    assert marked == {"DEAD_LETTERED": None, "SENT": f"{BULK_TOPIC}:0:1".encode()}


def test_a_partition_taken_over_skips_the_jobs_its_commit_marks_as_done() -> None:
    loop = make_loop(start=False)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(6)))
    loop.broker.commit(loop.io.group, Position(BULK_TOPIC, 0, 1, encode_marks(1, {2, 4})))
    loop.sender.start()
    loop.step()
    assert sorted(r.token_hex for r in loop.pool.waiting) == [f"{n:064x}" for n in (1, 3, 5)]
    finish(loop)
    assert loop.committed(BULK_TOPIC) == 6
    assert loop.sender.metrics.recovered._value.get() == 2


def test_a_failed_commit_is_made_again() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, job(0))
    loop.step()
    loop.io.fail_commits = "coordinator not available"
    finish(loop)
    assert loop.committed(BULK_TOPIC) < 0
    loop.io.fail_commits = None
    loop.step(2, advance_s=0.01)
    assert loop.committed(BULK_TOPIC) == 1


# -- lanes, reserve, caps ------------------------------------------------------------------------
def test_priority_jobs_go_first_on_their_own_connection_and_keep_a_reserve() -> None:
    loop = make_loop(max_in_flight=5, priority_reserve=2)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(10)))
    loop.step()
    assert len(loop.pool.waiting) == 3  # bulk may use max_in_flight - reserve
    loop.produce(PRIORITY_TOPIC, job(100, lane="PRIORITY"), job(101, lane="PRIORITY"))
    loop.step()
    lanes = [lane for _, lane in loop.pool.requests]
    assert lanes == [Lane.BULK] * 3 + [Lane.PRIORITY] * 2  # the reserve took them at once
    finish(loop, steps=1)
    # With both lanes waiting, priority is served first: it was sent in the same turn as bulk
    # and bulk got only what the reserve leaves.
    loop.produce(PRIORITY_TOPIC, job(102, lane="PRIORITY"))
    loop.step()
    assert loop.pool.requests[5][1] == Lane.PRIORITY
    assert [lane for _, lane in loop.pool.requests[6:]] == [Lane.BULK] * 2


def test_bulk_in_flight_is_capped_per_certificate_not_across_certificates() -> None:
    loop = make_loop(bulk_in_flight_per_certificate=2)
    loop.produce(BULK_TOPIC, *(job(n, topic=CERT if n % 2 else OTHER) for n in range(10)))
    loop.step()
    assert loop.pool.in_flight_for(CERT) == 2 and loop.pool.in_flight_for(OTHER) == 2
    loop.pool.answer(200, topic=CERT)
    loop.step()
    assert loop.pool.in_flight_for(CERT) == 2  # refilled from its own queue
    assert loop.states() == {"SENT": 2}


def test_due_retries_come_before_fresh_bulk_jobs() -> None:
    loop = make_loop(max_in_flight=2, priority_reserve=0)
    loop.produce(BULK_TOPIC, job(1))
    loop.produce(RETRY_200, job(2, attempt=1), headers=not_before(0))
    loop.step()
    first = loop.pool.requests[0][0]
    assert first.token_hex == f"{2:064x}"  # the retry, although the bulk job was read first


def test_throttled_keys_wait_for_their_bucket_without_blocking_other_keys() -> None:
    loop = make_loop(policies={CERT: PushPolicy(CERT, bulk_per_minute=60)})
    loop.produce(BULK_TOPIC, *(job(n) for n in range(3)), *(job(10 + n, topic=OTHER)
                                                              for n in range(3)))
    loop.step()
    assert loop.pool.in_flight_for(CERT) == 1 and loop.pool.in_flight_for(OTHER) == 3
    loop.step(advance_s=0.5)
    assert loop.pool.in_flight_for(CERT) == 1
    loop.step(advance_s=0.6)  # one second after the first: the next is due
    assert loop.pool.in_flight_for(CERT) == 2


# -- pause state -----------------------------------------------------------------------------------
def test_a_full_buffer_pauses_the_partition_until_half_has_drained() -> None:
    loop = make_loop(buffer_per_partition=4, bulk_in_flight_per_certificate=1)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(6)))
    loop.step()  # 6 read, 1 sent: 5 wait, over the cap of 4
    pauses = loop.sender.pauses
    assert pauses.reasons(SOURCE) == {PauseReason.BUFFER_FULL} and SOURCE in loop.io.paused
    for held in (4, 3):
        finish(loop, steps=1)
        assert loop.sender.buffers.held(SOURCE) == held
        assert SOURCE in loop.io.paused
    finish(loop, steps=1)  # 2 left: half the cap
    assert loop.sender.buffers.held(SOURCE) == 2
    assert not pauses.is_paused(SOURCE) and SOURCE not in loop.io.paused


def test_a_retry_not_due_pauses_its_partition_and_is_read_again_at_its_due_time() -> None:
    loop = make_loop()
    loop.step()
    due = loop.clock.epoch_ms() + 500
    loop.produce(RETRY_500, job(1, attempt=1), job(2, attempt=1), headers=not_before(due))
    loop.step()
    source = (RETRY_500, 0)
    assert loop.sender.pauses.reasons(source) == {PauseReason.RETRY_NOT_DUE}
    assert loop.pool.requests == []  # never early
    loop.step(3, advance_s=0.1)
    assert loop.pool.requests == []
    loop.step(advance_s=0.25)  # past the due time: resumed, sought back to the head
    assert not loop.sender.pauses.is_paused(source)
    loop.step()
    assert [r.token_hex for r, _ in loop.pool.requests] == [f"{1:064x}", f"{2:064x}"]


def test_a_partition_paused_for_two_reasons_resumes_only_when_both_are_gone() -> None:
    loop = make_loop(buffer_per_partition=2, bulk_in_flight_per_certificate=1)
    loop.step()
    now = loop.clock.epoch_ms()
    loop.produce(RETRY_200, *(job(n, attempt=1) for n in range(3)), headers=not_before(now))
    loop.produce(RETRY_200, job(9, attempt=1), headers=not_before(now + 200))
    loop.step()
    source = (RETRY_200, 0)
    assert loop.sender.pauses.reasons(source) == {PauseReason.BUFFER_FULL,
                                                  PauseReason.RETRY_NOT_DUE}
    loop.step(advance_s=0.11)  # housekeeping: the gauges say why
    paused = loop.sender.metrics.paused
    assert [paused.labels(r)._value.get() for r in PauseReason] == [1, 1]
    loop.step(advance_s=0.3)  # the head is due now, but the buffer is still full
    assert loop.sender.pauses.reasons(source) == {PauseReason.BUFFER_FULL}
    assert source in loop.io.paused
    finish(loop, steps=1)  # one answered, the next sent: 1 waits, half the cap of 2
    assert not loop.sender.pauses.is_paused(source) and source not in loop.io.paused


# -- answers: retries, exhausted, breaker, wrong topic ---------------------------------------
def test_a_transient_answer_retries_on_the_first_tier_with_its_due_time() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    sent_at = loop.clock.epoch_ms()
    loop.pool.answer(503, reason="ServiceUnavailable")
    loop.step()
    assert loop.states() == {"RETRYING": 1}
    [copy] = loop.broker.records(RETRY_200)
    headers = headers_of(copy)
    assert headers[ATTEMPT_HEADER] == b"1"
    assert int(headers[NOT_BEFORE_HEADER]) == sent_at + 200
    again = SERDE.decode_as(copy.value(), "PushJob")
    assert again["attempt"] == 1 and again["last_error"] == "503 ServiceUnavailable"


def test_exhausted_attempts_go_to_the_dlq_with_their_source_and_reason() -> None:
    loop = make_loop(default_max_attempts=2)
    loop.produce(RETRY_200, job(1, attempt=1), headers=not_before(0))
    loop.step()
    finish(loop, 500)
    assert loop.states() == {"DEAD_LETTERED": 1}
    [dead] = loop.dlq()
    headers = headers_of(dead)
    assert headers[SOURCE_TOPIC_HEADER] == RETRY_200.encode()
    assert headers[SOURCE_OFFSET_HEADER] == b"0" and headers[ATTEMPT_HEADER] == b"2"
    assert headers[REASON_HEADER].startswith(b"attempts exhausted: 500")
    assert SERDE.decode_as(dead.value(), "PushJob")["attempt"] == 2
    assert loop.committed(RETRY_200) == 1


def test_a_refused_certificate_opens_the_breaker_and_defers_without_burning_attempts() -> None:
    loop = make_loop(breaker_s=1.0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(3)))
    loop.step()
    loop.pool.answer(None, count=1, error_kind=TransportError.CERTIFICATE)
    loop.step()
    assert CERT in loop.sender.breakers.open_topics()
    loop.produce(BULK_TOPIC, job(5))
    loop.step()  # the breaker is open: job 5 goes to a retry tier unsent
    reasons = [o["reason"] for o in loop.outcomes()]
    assert reasons == ["transport:certificate", "BreakerOpen"]
    assert all(SERDE.decode_as(r.value(), "PushJob")["attempt"] == 0
               for r in loop.broker.records(RETRY_500) + loop.broker.records(RETRY_200))
    assert len(loop.pool.requests) == 3


def test_a_job_for_a_certificate_not_mounted_fails_as_wrong_topic() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, job(1, topic="com.apple.mgmt.External.not-ours"))
    loop.step(2)
    [outcome] = loop.outcomes()
    assert (outcome["state"], outcome["reason"], outcome["status"]) == (
        "FAILED", "WrongTopic", None)
    assert loop.committed(BULK_TOPIC) == 1


@pytest.mark.parametrize(("field", "value", "why"), [
    ("token_hex", "abc", "token_hex: 3 hex characters"),
    ("token_hex", "zz" * 32, "token_hex: must match"),
    ("token_hex", "ab" * 101, "token_hex: 202 characters"),
    ("topic", "com.apple.mgmt/../x", "topic: must match"),
    ("enrollment_id", "E 1/evil", "enrollment_id: must match"),
])
def test_an_invalid_job_fails_by_itself_unsent_and_leaves_its_certificate_alone(
        field: str, value: str, why: str) -> None:
    loop = make_loop(breaker_s=1.0)
    bad = job(1) | {field: value}
    loop.produce(BULK_TOPIC, bad, job(2))
    loop.step(2)
    assert [r.token_hex for r, _ in loop.pool.requests] == [f"{2:064x}"]  # only the valid one
    assert loop.sender.in_flight == 1 and loop.pool.in_flight_for(CERT) == 1
    [failed] = loop.outcomes()
    assert failed["state"] == "FAILED" and failed["status"] is None
    assert failed["reason"].startswith(f"InvalidJob: {why}")
    assert loop.sender.breakers.open_topics() == []
    assert loop.sender.breakers[CERT].allow()
    finish(loop)
    assert loop.states() == {"FAILED": 1, "SENT": 1} and loop.committed(BULK_TOPIC) == 2


def test_a_410_outcome_carries_the_token_dead_mark() -> None:
    loop = make_loop()
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    finish(loop, 410)
    [record] = loop.broker.records(TOPICS.outcomes)
    assert headers_of(record) == {"mdmpush.token_dead": b"410",
                                  SOURCE_HEADER: f"{BULK_TOPIC}:0:0".encode()}


# -- poison and refused records ---------------------------------------------------------------
def test_a_poison_record_goes_to_the_dlq_untouched_and_the_loop_goes_on() -> None:
    loop = make_loop()
    loop.broker.append(BULK_TOPIC, b"not avro at all", key=CERT, partition=0)
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    finish(loop)
    [poison] = loop.dlq()
    assert poison.value() == b"not avro at all"
    headers = headers_of(poison)
    assert headers[SOURCE_TOPIC_HEADER] == BULK_TOPIC.encode()
    assert headers[SOURCE_PARTITION_HEADER] == b"0" and headers[SOURCE_OFFSET_HEADER] == b"0"
    assert b"unknown wire format" in headers[REASON_HEADER]
    assert loop.states() == {"SENT": 1} and loop.committed(BULK_TOPIC) == 2


def test_a_flood_of_poison_stops_the_sender_instead_of_emptying_the_topic() -> None:
    loop = make_loop(dlq_limit=DlqLimit(max_ratio=0.5, min_records=4, window=10))
    for _ in range(6):
        loop.broker.append(BULK_TOPIC, b"garbage", key=CERT, partition=0)
    loop.step()
    assert isinstance(loop.sender.failure, SenderStopped)
    assert "dead-letter" in str(loop.sender.failure.__cause__)
    assert len(loop.dlq()) < 6
    loop.sender.shutdown()
    assert loop.committed(BULK_TOPIC) < 6  # what was not set aside is read again


def test_an_outcome_refused_for_good_sends_the_job_to_the_dlq_and_the_loop_goes_on() -> None:
    loop = make_loop()
    loop.io.refuse(TOPICS.outcomes, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    loop.produce(BULK_TOPIC, job(1), job(2))
    loop.step()
    finish(loop, steps=3)
    assert loop.sender.failure is None
    dead = loop.dlq()
    assert {SERDE.decode_as(r.value(), "PushJob")["job_id"] for r in dead} == {"req/E1",
                                                                             "req/E2"}
    assert all(headers_of(r)[REASON_HEADER].startswith(b"Kafka refused a record for ")
               for r in dead)
    assert loop.committed(BULK_TOPIC) == 2


def test_a_record_refused_before_queueing_is_dead_lettered_too() -> None:
    loop = make_loop()
    loop.io.raise_on_produce(TOPICS.outcomes, PermanentDeliveryError("too large"))
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    finish(loop)
    assert [headers_of(r)[REASON_HEADER] for r in loop.dlq()] == [
        f"Kafka refused a record for {TOPICS.outcomes}: too large".encode()]
    assert loop.committed(BULK_TOPIC) == 1


def test_a_record_kafka_lost_stops_the_sender_without_committing_its_job() -> None:
    loop = make_loop()
    loop.io.refuse(TOPICS.outcomes, KafkaError(KafkaError._MSG_TIMED_OUT))
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    finish(loop)
    assert isinstance(loop.sender.failure, SenderStopped)
    assert "req/E1" in str(loop.sender.failure)
    loop.sender.shutdown()
    assert loop.committed(BULK_TOPIC) < 1 and loop.dlq() == []


def test_a_refused_dlq_write_stops_the_sender_without_committing_its_job() -> None:
    loop = make_loop()
    loop.io.refuse(TOPICS.outcomes, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    loop.io.refuse(TOPICS.dlq, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    loop.produce(BULK_TOPIC, job(1))
    loop.step()
    finish(loop)
    assert isinstance(loop.sender.failure, SenderStopped)
    assert "DLQ" in str(loop.sender.failure)
    loop.sender.shutdown()
    assert loop.committed(BULK_TOPIC) < 1


def test_run_raises_the_reason_it_stopped() -> None:
    loop = make_loop(start=False)
    loop.io.refuse(TOPICS.outcomes, KafkaError(KafkaError._MSG_TIMED_OUT))
    loop.produce(BULK_TOPIC, job(1))
    loop.pool.certificates.clear()  # WrongTopic at once: an outcome without waiting on APNs
    with pytest.raises(SenderStopped, match="Kafka lost a record"):
        loop.sender.run()
    assert loop.io.closed


# -- rebalance ----------------------------------------------------------------------------------
def test_a_revoked_partition_forgets_its_jobs_and_pauses_and_the_next_owner_starts_clean() -> None:
    loop = make_loop(buffer_per_partition=2, bulk_in_flight_per_certificate=1)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(4)))
    loop.step()
    assert loop.sender.pauses.is_paused(SOURCE)
    finish(loop, steps=1)  # offset 0 done; 1 in flight; 2, 3 waiting
    loop.pool.answer(200)
    loop.io.rebalance()
    loop.step()  # revoke: drain what is in flight, commit, forget; assign again
    assert loop.committed(BULK_TOPIC) == 2
    assert not loop.sender.pauses.is_paused(SOURCE)
    loop.step()  # the same partition, from its commit: 2 and 3 again
    tokens = [r.token_hex for r, _ in loop.pool.requests]
    assert tokens[-1] == f"{2:064x}" and tokens.count(f"{2:064x}") == 1


def test_after_a_stall_past_the_fence_nothing_is_sent_until_the_group_answers() -> None:
    """R-FAULTS-2: a sender frozen longer than the group keeps a silent member's partitions
    must not push its buffered jobs on waking: another sender may own and push them now."""
    loop = make_loop(stall_fence_s=5.0, max_in_flight=2, priority_reserve=0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(6)))
    loop.step()
    assert len(loop.pool.requests) == 2
    loop.pool.answer(200)
    loop.io.fail_commits = "UNKNOWN_MEMBER_ID"  # the group dropped this member meanwhile
    loop.step(advance_s=6.0)  # SIGSTOP for 6 s, then SIGCONT
    loop.step(3, advance_s=1.0)
    assert len(loop.pool.requests) == 2  # fenced: the buffered jobs stay where they are
    assert loop.sender.metrics.fenced._value.get() == 1
    loop.io.fail_commits = None
    loop.io.rebalance(assign=[])  # librdkafka rejoins: the partitions were handed over
    loop.step(3, advance_s=1.0)
    assert len(loop.pool.requests) == 2  # dropped with the partition, never pushed here


def test_after_a_stall_the_group_confirming_the_partitions_lets_the_pushes_resume() -> None:
    loop = make_loop(stall_fence_s=5.0, max_in_flight=2, priority_reserve=0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(6)))
    loop.step()
    loop.pool.answer(200)
    loop.step(advance_s=6.0)  # a stall past the fence, but the commit is accepted
    loop.step(2, advance_s=0.01)
    assert len(loop.pool.requests) == 4
    assert loop.sender.metrics.fenced._value.get() == 1
    finish(loop)
    finish(loop)
    assert loop.committed(BULK_TOPIC) == 6


def test_a_stall_within_a_turn_stops_the_sends_of_that_turn() -> None:
    loop = make_loop(stall_fence_s=5.0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(4)))
    loop.sender._route(loop.io.consume(100, 0.0))  # a turn consumed the jobs...
    loop.clock.advance(6.0)  # ...and froze before its sends
    loop.sender._dispatch()
    assert loop.pool.requests == []
    assert loop.sender.metrics.fenced._value.get() == 1


def test_requests_on_the_wire_at_a_stall_that_cost_the_partition_are_not_retried() -> None:
    """A long stall times out the requests that were in flight (their answers come too late
    for libcurl); retrying them would push jobs the new owner has pushed already."""
    loop = make_loop(stall_fence_s=5.0, max_in_flight=2, priority_reserve=0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(4)))
    loop.step()
    assert len(loop.pool.requests) == 2
    loop.pool.answer(None, error_kind=TransportError.TIMEOUT)
    loop.io.fail_commits = "UNKNOWN_MEMBER_ID"
    loop.io.rebalance(assign=[])  # librdkafka noticed first: the revoke comes at once
    loop.step(advance_s=20.0)
    assert loop.sender.in_flight == 0 and loop.outcomes() == []
    assert loop.broker.records(RETRY_200) == []
    loop.step(3, advance_s=1.0)
    assert len(loop.pool.requests) == 2 and loop.outcomes() == []


def test_requests_not_yet_written_when_the_stall_is_found_are_taken_back() -> None:
    loop = make_loop(stall_fence_s=5.0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(4)))
    loop.sender._route(loop.io.consume(100, 0.0))
    loop.sender._dispatch()  # submitted; libcurl writes them at the next poll...
    assert len(loop.pool.requests) == 4
    loop.io.fail_commits = "UNKNOWN_MEMBER_ID"
    loop.step(advance_s=6.0)  # ...but the process froze first
    assert loop.pool.requests == [] and loop.sender.in_flight == 0
    loop.io.fail_commits = None
    loop.step(advance_s=1.0)  # the group accepts the commit: still its partition
    assert sorted(r.token_hex for r in loop.pool.waiting) == [f"{n:064x}" for n in range(4)]


def test_lane_of_a_retry_read_back_is_retry_but_its_outcome_says_bulk() -> None:
    assert Lane.RETRY.job_lane is Lane.BULK and Lane.PRIORITY.job_lane is Lane.PRIORITY
    loop = make_loop()
    loop.produce(RETRY_200, job(1, attempt=1), headers=not_before(0))
    loop.step()
    finish(loop)
    assert loop.pool.requests[0][1] == Lane.BULK
    assert [o["lane"] for o in loop.outcomes()] == ["BULK"]


# -- the unrecorded window (what a crash repeats) --------------------------------------------------
def test_the_window_holds_pushes_until_kafka_has_their_outcomes() -> None:
    loop = make_loop(already_sent=True, unrecorded_min=3, unrecorded_share=0.0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(10)))
    loop.step()
    assert len(loop.pool.waiting) == 3  # the window: 3 pushes not yet recorded
    loop.io.hold_deliveries = True
    finish(loop)  # answered, outcomes produced, not acknowledged
    assert loop.sender.offsets.unrecorded == 3 and loop.pool.waiting == []
    loop.io.release_deliveries()
    loop.step(2, advance_s=0.01)
    assert len(loop.pool.waiting) == 3 and loop.sender.offsets.unrecorded == 0


def test_a_retried_job_stays_in_the_window_until_a_commit_covers_it() -> None:
    loop = make_loop(already_sent=True, unrecorded_min=2, unrecorded_share=0.0)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(4)))
    loop.step()
    loop.io.fail_commits = "the broker is slow"
    finish(loop, status=503)  # RETRYING + retry copies, acknowledged; no commit covers them
    assert loop.states() == {"RETRYING": 2}
    assert loop.sender.offsets.unrecorded == 2 and loop.pool.waiting == []
    loop.io.fail_commits = None
    loop.step(3, advance_s=0.01)
    assert loop.sender.offsets.unrecorded == 0 and len(loop.pool.waiting) == 2


def test_the_window_is_a_share_of_the_jobs_outstanding_never_below_its_floor() -> None:
    outstanding: list[int | None] = [None]
    loop = make_loop(already_sent=True, unrecorded_min=2, unrecorded_share=0.01,
                     outstanding=lambda: outstanding[0])
    loop.produce(BULK_TOPIC, *(job(n) for n in range(30)))
    loop.step()
    assert len(loop.pool.waiting) == 2  # not known yet: the floor
    outstanding[0] = 1_000
    loop.step()
    assert len(loop.pool.waiting) == 10  # 1 % of 1,000
    outstanding[0] = 50
    finish(loop)
    assert len(loop.pool.waiting) == 2


def test_the_window_keeps_a_share_of_the_last_minutes_pushes_as_the_backlog_drains() -> None:
    """The backlog drained, the pushes of the last minute still size the window (a share of
    the same run); a minute later they no longer count."""
    outstanding = [100]
    loop = make_loop(already_sent=True, unrecorded_min=2, unrecorded_share=0.1,
                     outstanding=lambda: outstanding[0])
    loop.produce(BULK_TOPIC, *(job(n) for n in range(200)))
    loop.step()
    pushed = 0
    while pushed < 100:
        assert len(loop.pool.waiting) == 10  # 10 % of the 100 outstanding
        pushed += loop.pool.answer(200)
        loop.step(2, advance_s=0.05)  # acknowledged, committed, the next 10 sent
    outstanding[0] = 0  # drained, as far as the statistics tell
    loop.pool.answer(200)
    loop.step(2, advance_s=0.05)
    # 10 % of the 100 pushes made since the minute's first sample (the first turn's 10 came
    # before it): without them the window would be its floor, 2.
    assert len(loop.pool.waiting) == 10
    loop.pool.answer(200)
    loop.step(advance_s=61.0)  # answered; the minute's samples age out at this housekeeping
    loop.step(advance_s=0.05)
    assert len(loop.pool.waiting) == 2  # the floor


def test_a_full_window_sends_its_records_at_once_and_waits_on_kafka_not_apns() -> None:
    """With the window full an answer makes no room, an acknowledgement does: the loop flushes
    (librdkafka ignores linger.ms during a flush) and waits on that rather than on APNs."""
    loop = make_loop(already_sent=True, unrecorded_min=3, unrecorded_share=0.0)
    flushes: list[float] = []
    flush = loop.io.flush

    def spy(timeout_s: float) -> None:
        flushes.append(timeout_s)
        flush(timeout_s)

    loop.io.flush = spy  # type: ignore[method-assign]
    loop.produce(BULK_TOPIC, *(job(n) for n in range(10)))
    loop.step(2)
    assert len(loop.pool.waiting) == 3 and flushes == []  # full: nothing produced to flush
    assert loop.pool.waits[-1] > 0  # the loop waits on APNs answers
    loop.io.hold_deliveries = True
    loop.pool.answer(200, count=1)
    loop.step()
    assert len(flushes) == 1 and flushes[0] > 0  # its outcome went out at once
    loop.step()
    assert loop.pool.waits[-1] == 0 and len(flushes) == 2  # still unacknowledged: Kafka's turn
    loop.io.release_deliveries()
    loop.step(2)
    assert len(loop.pool.waiting) == 3 and loop.sender.offsets.unrecorded == 0


def test_without_the_outcome_read_there_is_no_window() -> None:
    loop = make_loop(unrecorded_min=2)
    loop.produce(BULK_TOPIC, *(job(n) for n in range(5)))
    loop.step()
    assert len(loop.pool.waiting) == 5  # a crash repeats what max_in_flight bounds anyway


@pytest.mark.parametrize("seed", range(8))
def test_a_crash_at_any_moment_repeats_at_most_the_window(seed: int) -> None:
    """Random answers (accepted or 503), acknowledgements held and released, commits refused,
    then the process dies; its successor finishes the partition. Pushes APNs accepted more than
    once per device <= the window, and every job ends SENT."""
    rng = random.Random(seed)
    window, jobs = 6, 60
    first = make_loop(already_sent=True, unrecorded_min=window, unrecorded_share=0.0,
                      max_in_flight=50, priority_reserve=0)
    first.produce(BULK_TOPIC, *(job(n) for n in range(jobs)))
    accepted: Counter[str] = Counter()
    for _ in range(rng.randint(3, 40)):
        first.io.hold_deliveries = rng.random() < 0.4
        first.io.fail_commits = "slow" if rng.random() < 0.2 else None
        waiting = {r.correlation_id: r.token_hex for r in first.pool.waiting}
        status = 503 if rng.random() < 0.2 else 200
        answered = first.pool.answer(status, count=rng.randint(0, 4))
        if status == 200:
            accepted.update(list(waiting.values())[:answered])
        first.step(advance_s=rng.choice((0.0, 0.01, 0.3)))
        assert len(first.pool.waiting) + first.sender.offsets.unrecorded <= window
    accepted.update(r.token_hex for r in first.pool.waiting)  # on the wire: APNs took them
    second = make_loop(broker=first.broker, already_sent=True, unrecorded_min=window,
                       unrecorded_share=0.0, max_in_flight=50, priority_reserve=0)
    for _ in range(100):
        accepted.update(r.token_hex for r in second.pool.waiting)
        finish(second, steps=1)
        second.clock.advance(0.3)
        done = {o["job_id"] for o in second.outcomes() if o["state"] == "SENT"}
        if len(done) == jobs and not second.pool.waiting:
            break
    assert len(done) == jobs
    assert sum(n - 1 for n in accepted.values()) <= window


def test_retried_jobs_past_a_throttled_neighbour_do_not_hold_the_window_shut() -> None:
    """Two certificates share a partition; one is throttled, the other's pushes fail and are
    retried. The retried jobs wait for a commit, which the throttled job (older, unsent) holds
    below them: the commit's marks list them, so they leave the window and the throttled job
    still gets its turn."""
    loop = make_loop(policies={OTHER: PushPolicy(bulk_per_minute=1.0)}, already_sent=True,
                     unrecorded_min=2, unrecorded_share=0.0)
    loop.produce(BULK_TOPIC, job(0, topic=OTHER), job(1, topic=OTHER),
                 *(job(n) for n in range(2, 8)))
    for _ in range(40):
        loop.step(advance_s=0.01)
        loop.pool.answer(503, topic=CERT)  # every push of the other certificate is retried
        loop.pool.answer(200, topic=OTHER)
        loop.step(2, advance_s=0.01)
    assert f"{1:064x}" not in {r.token_hex for r, _ in loop.pool.requests}  # throttled: 1/min
    for _ in range(70):
        loop.step(advance_s=1.0)
        loop.pool.answer(503, topic=CERT)
        loop.pool.answer(200, topic=OTHER)
        loop.step(2, advance_s=0.01)
    assert f"{1:064x}" in {r.token_hex for r, _ in loop.pool.requests}
