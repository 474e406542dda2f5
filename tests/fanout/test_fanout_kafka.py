"""The fan-out worker against the real broker: one worker, one registry, several requests.

The module shares one worker (start-up and the registry build take seconds); each test uses its
own request ids, and the enrollments a test changes belong to a tenant no other test targets.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from services.common.admin import admin_client, create_topics
from services.common.catalogue import Topics, all_topics
from services.common.settings import KafkaSettings
from services.sender.service import TOKEN_DEAD
from tests.fanout.harness import (
    AT,
    SERDE,
    T1,
    Publisher,
    Reader,
    Worker,
    checkin,
    enroll,
    failed_410,
    policy,
    request,
    token,
)
from tests.support.broker import Broker
from tests.support.topic_limits import until_the_broker_refuses

pytestmark = pytest.mark.kafka

T2 = "com.apple.mgmt.External.cert-two"  # its policy splits it into 3 shards


@dataclass
class World:
    topics: Topics
    worker: Worker
    pub: Publisher
    priority: Reader
    bulk: Reader
    outcomes: Reader
    registry: Reader
    dlq: Reader

    def checkins(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.pub.record(self.topics.checkins, "CheckinEvent", event, event["enrollment_id"])

    def request(self, req: dict[str, Any]) -> None:
        self.pub.record(self.topics.requests, "NotificationRequest", req, req["tenant"])

    def device(self, eid: str, until: Any = lambda r: True) -> dict[str, Any]:
        """The newest DeviceRecord of `eid`, once one satisfies `until`."""
        def newest(items: list[dict[str, Any]]) -> dict[str, Any] | None:
            mine = [r for r in items if r["enrollment_id"] == eid]
            return mine[-1] if mine else None

        self.registry.wait(lambda items: (r := newest(items)) is not None and until(r),
                           worker=self.worker)
        found = newest(self.registry.items)
        assert found is not None
        return found

    def results(self, rid: str, jobs: int, skipped: int, reader: Reader | None = None
                ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Wait for `jobs` jobs and `skipped` outcomes of request `rid`, then prove no more come."""
        reader = reader or self.priority

        def of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in items if r["request_id"] == rid]

        reader.wait(lambda items: len(of(items)) >= jobs, worker=self.worker)
        self.outcomes.wait(lambda items: len(of(items)) >= skipped, worker=self.worker)
        found_jobs, found_skips = of(reader.settle()), of(self.outcomes.settle())
        assert len(found_jobs) == jobs, found_jobs
        assert len(found_skips) == skipped, found_skips
        return ({j["enrollment_id"]: j for j in found_jobs},
                {o["enrollment_id"]: o for o in found_skips})


@pytest.fixture(scope="module")
def world(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}.", linger_ms=1
    )
    create_topics(kafka, all_topics(), partitions_override=2)
    topics = Topics(kafka.topic_prefix)
    pub = Publisher(kafka)
    pub.record(topics.config, "PushPolicy", policy(T2, 3), T2)
    # Coalescing off: these tests push the same devices from several requests on purpose
    # (coalescing has its own module, test_coalescing_kafka.py).
    worker = Worker(kafka, Path(tmp_path_factory.mktemp("fanout")),
                    MDMPUSH_FANOUT_CHUNK_SIZE="2", MDMPUSH_FANOUT_COALESCE="false")
    worker.start()
    w = World(
        topics, worker, pub,
        priority=Reader(kafka, topics.jobs_priority, "PushJob"),
        bulk=Reader(kafka, topics.jobs_bulk, "PushJob"),
        outcomes=Reader(kafka, topics.outcomes, "PushOutcome"),
        registry=Reader(kafka, topics.registry, "DeviceRecord"),
        dlq=Reader(kafka, topics.dlq, None),
    )
    try:  # a setup that fails stops its worker too (a module fixture is set up again per test)
        w.checkins(
            enroll("A1") + enroll("A2", T2)
            + [checkin("A3", "AUTHENTICATE", AT, topic=T1)]
            + enroll("A4") + [checkin("A4", "CHECK_OUT", AT + 20)]
            + enroll("A5") + enroll("G1", tenant="globex") + enroll("I6", tenant="initech")
        )
        for eid in ("A1", "A2", "A5", "G1", "I6"):
            w.device(eid, lambda r: r["state"] == "ENROLLED")
        w.device("A4", lambda r: r["state"] == "CHECKED_OUT")
        w.device("A3")
        # A 410 outcome without the sender's mark is not the fan-out's to read (it reads no
        # other).
        pub.record(topics.outcomes, "PushOutcome", failed_410("A2", token("A2"), AT + 100), "A2")
        for eid in ("A5", "I6"):
            pub.outcome_410(topics.outcomes, eid, token(eid), AT + 100)
        # A 410 for a token A1 no longer has says nothing about its current token.
        pub.outcome_410(topics.outcomes, "A1", "ff" * 32, AT + 100)
        for eid in ("A5", "I6"):
            w.device(eid, lambda r: r["token_dead_since"] == AT + 100)
        yield w
    finally:
        worker.stop()
        for reader in (w.priority, w.bulk, w.outcomes, w.registry, w.dlq):
            reader.close()


def test_registry_records_follow_checkins(world: World) -> None:
    a1 = world.device("A1")
    assert (a1["tenant"], a1["state"], a1["topic"], a1["token_hex"], a1["push_magic"]) == (
        "acme", "ENROLLED", T1, token("A1"), "magic-A1")
    assert (a1["enrolled_at"], a1["token_updated_at"], a1["last_contact_at"]) == (
        AT + 10, AT + 10, AT + 10)
    assert a1["token_dead_since"] is None, "a 410 for another token must not kill A1's"
    assert world.device("A2")["token_dead_since"] is None, "an unmarked outcome was read"
    assert world.device("A3")["state"] == "AUTHENTICATED"


def test_explicit_targets_get_one_job_each_or_a_skip_reason(world: World) -> None:
    ids = ["A1", "A2", "A3", "A4", "A5", "NOPE", "G1", "A1"]
    world.request(request("r-explicit", ids=ids, initiator="USER"))
    jobs, skips = world.results("r-explicit", jobs=2, skipped=5)

    a1, a2 = jobs["A1"], jobs["A2"]
    assert (a1["job_id"], a1["lane"], a1["kind"], a1["topic"], a1["token_hex"],
            a1["push_magic"], a1["token_updated_at"]) == (
        "r-explicit/A1", "PRIORITY", "MDM", T1, token("A1"), "magic-A1", AT + 10)
    assert a2["topic"] == T2
    assert {k: v["reason"] for k, v in skips.items()} == {
        "A3": "no_token", "A4": "checked_out", "A5": "token_dead",
        "NOPE": "unknown_enrollment", "G1": "unknown_enrollment",
    }
    assert skips["G1"]["token_hex"] is None, "another tenant's device must not leak"
    assert all(s["state"] == "SKIPPED" and s["lane"] == "PRIORITY" for s in skips.values())

    keys = {SERDE.decode_as(m.value(), "PushJob")["job_id"]: m.key().decode()
            for m in _raw(world, world.topics.jobs_priority)}
    assert keys["r-explicit/A1"] == T1
    assert keys["r-explicit/A2"] == f"{T2}#{zlib.crc32(b'A2') % 3}"


def test_target_all_expands_every_enrollment_of_the_tenant(world: World) -> None:
    payload = '{"aps":{"badge":1}}'
    world.request(request("r-all", initiator="ADMIN", kind="APS", aps_payload=payload,
                          expiration=AT + 60_000))
    jobs, skips = world.results("r-all", jobs=2, skipped=3, reader=world.bulk)
    assert set(jobs) == {"A1", "A2"}
    for job in jobs.values():
        assert (job["lane"], job["kind"], job["aps_payload"], job["push_magic"],
                job["expiration"]) == ("BULK", "APS", payload, None, AT + 60_000)
    assert {k: v["reason"] for k, v in skips.items()} == {
        "A3": "no_token", "A4": "checked_out", "A5": "token_dead"}


def test_a_republished_request_does_not_double_the_jobs(world: World) -> None:
    for _ in range(2):
        world.request(request("r-dup", ids=["A1", "A2", "A3"]))
        world.request(request("r-dup-all", tenant="globex"))
    # Sentinels on the same slices: once they are expanded, the duplicates were too.
    world.request(request("r-dup-sentinel", ids=["A1", "A2", "A3"]))
    world.request(request("r-dup-all-sentinel", tenant="globex"))
    world.results("r-dup-sentinel", jobs=2, skipped=1)
    world.results("r-dup-all-sentinel", jobs=1, skipped=0)
    world.results("r-dup", jobs=2, skipped=1)
    world.results("r-dup-all", jobs=1, skipped=0)


def test_poison_records_go_to_the_dlq_and_the_worker_continues(world: World) -> None:
    t = world.topics
    world.pub.raw(t.checkins, b"not avro at all", "A1")
    # Outcomes are the correlator's to dead-letter (it reads them all); the fan-out reads only
    # marked 410s, and an undecodable one must not stop it either.
    undecodable = b"\xc3\x01" + b"\x00" * 8
    world.outcomes.tolerate(undecodable)  # the test's own, on a topic it reads decoded
    world.pub.producer.produce_sync(t.outcomes, undecodable, key="A1", headers=TOKEN_DEAD)
    world.pub.raw(t.requests, SERDE.encode("PushPolicy", policy(T1, 1), t.requests), "acme")
    def poison(items: list[Any]) -> list[Any]:  # not the requests dead-lettered for refusals
        return [m for m in items if "mdmpush.slice" not in dict(m.headers())]

    dead = poison(world.dlq.wait(lambda items: len(poison(items)) >= 2, worker=world.worker))
    by_source = {dict(m.headers())["mdmpush.dlq.source.topic"].decode(): m for m in dead}
    assert set(by_source) == {t.checkins, t.requests}
    assert by_source[t.checkins].value() == b"not avro at all"
    assert b"expected a NotificationRequest" in dict(by_source[t.requests].headers())[
        "mdmpush.dlq.reason"]
    assert {dict(m.headers())["mdmpush.dlq.service"] for m in dead} == {b"fanout"}
    world.request(request("r-after-poison", ids=["A1"]))
    world.results("r-after-poison", jobs=1, skipped=0)


def test_a_token_update_newer_than_the_410_revives_the_device(world: World) -> None:
    world.request(request("r-dead", tenant="initech", ids=["I6"]))
    _, skips = world.results("r-dead", jobs=0, skipped=1)
    assert skips["I6"]["reason"] == "token_dead"

    world.checkins([checkin("I6", "TOKEN_UPDATE", AT + 200, "initech", topic=T1,
                            token_hex=token("I6", 1), push_magic="magic-I6")])
    world.device("I6", lambda r: r["token_dead_since"] is None)
    world.request(request("r-revived", tenant="initech", ids=["I6"]))
    jobs, _ = world.results("r-revived", jobs=1, skipped=0)
    assert (jobs["I6"]["token_hex"], jobs["I6"]["token_updated_at"]) == (token("I6", 1), AT + 200)


def test_a_job_kafka_refuses_forever_sends_its_request_to_the_dlq(world: World) -> None:
    """A job larger than its topic allows is refused by the broker on every attempt: the request
    goes to the DLQ with the reason, and the worker goes on (instead of producing it forever)."""
    t = world.topics
    admin = admin_client(world.worker.kafka)

    def topic_max_bytes(value: str, op: AlterConfigOpType) -> None:
        resource = ConfigResource(ResourceType.TOPIC, t.jobs_priority, incremental_configs=[
            ConfigEntry("max.message.bytes", value, incremental_operation=op)])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)

    topic_max_bytes("1000", AlterConfigOpType.SET)
    try:
        probe = os.urandom(2_000)
        world.priority.tolerate(probe)  # a probe accepted before the limit applies
        until_the_broker_refuses(world.worker.kafka, t.jobs_priority, probe, b"probe")
        # Random bytes: lz4 cannot shrink the job under the topic's limit. The payload stays
        # within the 4096 bytes a request may carry (services/common/limits.py).
        payload = json.dumps({"aps": {"blob": base64.b64encode(os.urandom(2_200)).decode()}})
        world.request(request("r-huge", ids=["A1"], initiator="USER", kind="APS",
                              aps_payload=payload))
        refused = world.dlq.wait(
            lambda items: any(_header(m, "mdmpush.request_id") == b"r-huge" for m in items),
            worker=world.worker)
        (dead,) = [m for m in refused if _header(m, "mdmpush.request_id") == b"r-huge"]
        assert _header(dead, "mdmpush.dlq.source.topic") == t.requests.encode()
        assert b"MSG_SIZE_TOO_LARGE" in (_header(dead, "mdmpush.dlq.reason") or b"")
        assert SERDE.decode_as(dead.value(), "NotificationRequest")["request_id"] == "r-huge"
    finally:
        topic_max_bytes("", AlterConfigOpType.DELETE)
    world.request(request("r-after-huge", ids=["A1"], initiator="USER"))
    world.results("r-after-huge", jobs=1, skipped=0)
    assert not [j for j in world.priority.settle() if j["request_id"] == "r-huge"]


def _header(msg: Any, name: str) -> bytes | None:
    return dict(msg.headers() or []).get(name)


def _raw(world: World, topic: str) -> list[Any]:
    reader = Reader(world.worker.kafka, topic, None)
    try:
        return reader.settle(0.5)
    finally:
        reader.close()


# -- tenants: a request reaches only its own tenant's devices; check-ins cannot cross over -------
def test_a_tenant_never_gets_jobs_for_another_tenants_or_nobodys_devices(world: World) -> None:
    # N1's check-ins name no tenant: they make no record (test_coalescing_kafka proves it).
    world.checkins(enroll("H1", tenant="hooli") + enroll("U1", tenant="umbrella")
                   + enroll("N1", tenant=""))
    for eid in ("H1", "U1"):
        world.device(eid, lambda r: r["state"] == "ENROLLED")
    ids = ["H1", "U1", "N1"]
    for tenant, mine in (("hooli", "H1"), ("umbrella", "U1")):
        rid = f"r-cross-{tenant}"
        world.request(request(rid, tenant=tenant, ids=ids))
        jobs, skips = world.results(rid, jobs=1, skipped=2)
        assert set(jobs) == {mine} and jobs[mine]["tenant"] == tenant
        assert {k: (v["reason"], v["token_hex"], v["topic"]) for k, v in skips.items()} == {
            eid: ("unknown_enrollment", None, None) for eid in ids if eid != mine}
        world.request(request(f"{rid}-all", tenant=tenant))
        jobs, _ = world.results(f"{rid}-all", jobs=1, skipped=0)
        assert set(jobs) == {mine}


def test_a_checkin_naming_another_tenant_never_changes_the_enrollment(world: World) -> None:
    world.checkins(enroll("H2", tenant="hooli"))
    world.device("H2", lambda r: r["state"] == "ENROLLED")
    stolen = token("H2", 1)
    world.checkins([
        checkin("H2", "TOKEN_UPDATE", AT + 50, "umbrella", topic=T1, token_hex=stolen,
                push_magic="magic-umbrella"),
        checkin("H2", "CHECK_OUT", AT + 60, "umbrella"),
        checkin("H2", "AUTHENTICATE", AT + 70, "", topic=T1),
        # The owner's own check-in on the same key: once it shows, the others were read.
        checkin("H2", "TOKEN_UPDATE", AT + 80, "hooli", topic=T1, token_hex=token("H2", 2),
                push_magic="magic-H2"),
    ])
    world.device("H2", lambda r: r["token_hex"] == token("H2", 2))
    history = [r for r in world.registry.settle() if r["enrollment_id"] == "H2"]
    assert {r["tenant"] for r in history} == {"hooli"}
    assert all(r["token_hex"] != stolen and r["state"] != "CHECKED_OUT" for r in history)
    assert [r["token_updated_at"] for r in history if r["state"] == "ENROLLED"] == [AT + 10,
                                                                                  AT + 80]
    assert "refused" in world.worker.log_tail(400) and stolen not in world.worker.log_tail(400)
    world.request(request("r-stolen", tenant="umbrella", ids=["H2"]))
    _, skips = world.results("r-stolen", jobs=0, skipped=1)
    assert skips["H2"]["reason"] == "unknown_enrollment"


def test_requests_and_checkins_outside_the_limits_go_to_the_dlq_with_their_reason(
        world: World) -> None:
    t = world.topics
    world.checkins([checkin("V1", "TOKEN_UPDATE", AT, "hooli", topic=T1, token_hex="abc")])
    world.request(request("r-bad-tenant", tenant="not a tenant", ids=["H1"]))
    world.request(request("r-no-targets", tenant="hooli", ids=[], target_all=False))

    def invalid(items: list[Any]) -> list[Any]:
        return [m for m in items
                if dict(m.headers())["mdmpush.dlq.reason"].startswith(b"invalid ")]

    dead = invalid(world.dlq.wait(lambda items: len(invalid(items)) >= 3, worker=world.worker))
    reasons = {dict(m.headers())["mdmpush.dlq.reason"].decode(): m for m in dead}
    assert set(reasons) == {
        "invalid CheckinEvent: token_hex: 3 hex characters; an APNs token has an even number "
        "from 64 to 200",
        "invalid NotificationRequest: tenant: must match [A-Za-z0-9][A-Za-z0-9._-]*",
        "invalid NotificationRequest: enrollment_ids: a request needs targets or target_all",
    }
    by_source = {dict(m.headers())["mdmpush.dlq.source.topic"].decode() for m in dead}
    assert by_source == {t.checkins, t.requests}
    world.request(request("r-after-invalid", tenant="hooli", ids=["H1", "V1"]))
    jobs, skips = world.results("r-after-invalid", jobs=1, skipped=1)
    assert set(jobs) == {"H1"} and skips["V1"]["reason"] == "unknown_enrollment"
    assert world.worker.alive()
