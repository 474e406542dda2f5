"""Job building, keys, lanes and slice planning, without Kafka."""

from __future__ import annotations

import zlib

from services.common.catalogue import Topics
from services.common.serde import AvroSerde
from services.fanout.jobs import Lane, build_job, job_key, registry_partition, skipped_outcome
from services.fanout.registry import SkipReason, apply_checkin
from services.fanout.slices import plan
from tests.fanout.harness import AT, T1, enroll, request, token

SERDE = AvroSerde()


def record(eid: str = "E1") -> dict:
    rec = None
    for event in enroll(eid):
        rec = apply_checkin(rec, event, AT) or rec
    assert rec is not None
    return rec


def test_job_carries_the_current_trifecta_and_encodes() -> None:
    job = build_job(request("r1", ids=["E1"]), record(), "PRIORITY", AT + 5)
    assert (job["job_id"], job["topic"], job["token_hex"], job["push_magic"],
            job["token_updated_at"], job["created_at"]) == (
        "r1/E1", T1, token("E1"), "magic-E1", AT + 10, AT + 5)
    assert SERDE.decode_as(SERDE.encode("PushJob", job), "PushJob") == job


def test_aps_job_uses_the_payload_and_no_magic() -> None:
    req = request("r1", ids=["E1"], kind="APS", aps_payload='{"aps":{}}')
    job = build_job(req, record(), "BULK", AT)
    assert (job["kind"], job["push_magic"], job["aps_payload"]) == ("APS", None, '{"aps":{}}')


def test_lane_follows_the_initiator() -> None:
    topics = Topics("p.")
    assert Lane.of(request("r", initiator="USER"), topics) == Lane("PRIORITY",
                                                                 topics.jobs_priority)
    assert Lane.of(request("r", initiator="ADMIN"), topics) == Lane("BULK", topics.jobs_bulk)


def test_job_key_adds_the_shard_only_for_split_certificates() -> None:
    assert job_key(T1, "E1", 1) == T1
    assert job_key(T1, "E1", 4) == f"{T1}#{zlib.crc32(b'E1') % 4}"


def test_skipped_outcome_hides_unknown_or_foreign_records() -> None:
    req = request("r1", ids=["E1"])
    out = skipped_outcome(req, "E1", record(), SkipReason.UNKNOWN_ENROLLMENT, "BULK", AT)
    assert (out["state"], out["reason"], out["token_hex"]) == ("SKIPPED", "unknown_enrollment",
                                                               None)
    foreign = skipped_outcome(req, "E1", record(), SkipReason.FOREIGN_TENANT, "BULK", AT)
    assert foreign == out, "another tenant's device must look unknown, trifecta hidden"
    out = skipped_outcome(req, "E1", record(), SkipReason.TOKEN_DEAD, "BULK", AT)
    assert out["token_hex"] == token("E1")
    assert SERDE.decode_as(SERDE.encode("PushOutcome", out), "PushOutcome") == out


def test_target_all_gets_one_slice_per_partition() -> None:
    slices = plan(request("r1"), partitions=4, chunk_size=2)
    assert [(s.key, s.partition, s.enrollment_ids) for s in slices] == [
        (f"r1@{p}", p, None) for p in range(4)]


def test_explicit_targets_are_deduplicated_grouped_and_chunked() -> None:
    ids = [f"E{i}" for i in range(20)] + ["E1"]
    slices = plan(request("r1", ids=ids), partitions=3, chunk_size=2)
    covered = [eid for s in slices for eid in s.enrollment_ids or []]
    assert sorted(covered) == sorted(set(ids))
    for s in slices:
        assert s.enrollment_ids and len(s.enrollment_ids) <= 2
        assert all(registry_partition(e, 3) == s.partition for e in s.enrollment_ids)
    assert len({s.key for s in slices}) == len(slices)
    assert plan(request("r1", ids=ids), 3, 2) == slices  # deterministic: redelivery recognised


def test_a_coalesced_outcome_names_its_carrier_and_encodes() -> None:
    out = skipped_outcome(request("r2", ids=["E1"]), "E1", record(), SkipReason.COALESCED,
                          "BULK", AT, rides_on="r1/E1")
    assert (out["job_id"], out["state"], out["reason"], out["rides_on"], out["lane"]) == (
        "r2/E1", "SKIPPED", "coalesced", "r1/E1", "BULK")
    assert SERDE.decode_as(SERDE.encode("PushOutcome", out), "PushOutcome") == out
    plain = skipped_outcome(request("r2", ids=["E1"]), "E1", None,
                            SkipReason.UNKNOWN_ENROLLMENT, "BULK", AT)
    assert plain["rides_on"] is None
