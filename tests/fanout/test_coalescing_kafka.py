"""Coalescing, inactive skips and the registry's bounds, on fan-out workers and the real broker.

Two workers, each on its own topic prefix:
- `long`: a coalescing window of an hour (nothing expires during the tests), default pending TTL,
  and activity records produced before it starts (so its first expansion has read them);
- `short`: a window and a pending-enrollment TTL of 1 ms and a sweep every 0.3 s, so a carrier
  has always expired by the next request and a pending enrollment by the next sweep.
Order inside one enrollment is Kafka's (same key, same partition); nothing waits on wall time
except for records to arrive.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.admin import admin_client, create_topics
from services.common.catalogue import Topics, all_topics
from services.common.settings import KafkaSettings
from tests.fanout.harness import AT, SERDE, T1, Publisher, Reader, Worker, checkin, enroll, request
from tests.support.broker import Broker

pytestmark = pytest.mark.kafka

#: Longest wait for one expected record (a shared, loaded machine; never a figure asserted).
WAIT_S = 120.0


@dataclass
class Fleet:
    """One worker and the readers of its topics."""

    kafka: KafkaSettings
    topics: Topics
    worker: Worker
    pub: Publisher
    bulk: Reader
    priority: Reader
    outcomes: Reader
    registry: Reader
    metrics_port: int

    def checkins(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.pub.record(self.topics.checkins, "CheckinEvent", event, event["enrollment_id"])

    def request(self, rid: str, ids: list[str], initiator: str = "ADMIN") -> None:
        req = request(rid, ids=ids, initiator=initiator)
        self.pub.record(self.topics.requests, "NotificationRequest", req, req["tenant"])

    def device(self, eid: str, until: Callable[[dict[str, Any]], bool]) -> None:
        """Wait until a DeviceRecord of `eid` satisfies `until`."""
        def found(items: list[Any]) -> bool:
            return any(r.value() is not None and _record(r)["enrollment_id"] == eid
                       and until(_record(r)) for r in items)
        self.registry.wait(found, timeout_s=WAIT_S, worker=self.worker)

    def history(self, eid: str) -> list[dict[str, Any] | None]:
        """Every registry record of `eid` so far, in order (None: a tombstone)."""
        return [_record(r) if r.value() is not None else None
                for r in self.registry.settle() if r.key() == eid.encode()]

    def results(self, rid: str, jobs: int, skipped: int
                ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Jobs (either lane) and SKIPPED outcomes of `rid`, once exactly that many showed."""
        def of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in items if r["request_id"] == rid]

        def both_lanes(_: list[Any]) -> bool:
            self.priority.poll()
            return len(of(self.bulk.items)) + len(of(self.priority.items)) >= jobs

        self.bulk.wait(both_lanes, timeout_s=WAIT_S, worker=self.worker)
        self.outcomes.wait(lambda items: len(of(items)) >= skipped, timeout_s=WAIT_S,
                           worker=self.worker)
        found_jobs = of(self.bulk.settle()) + of(self.priority.settle())
        found_skips = of(self.outcomes.settle())
        assert len(found_jobs) == jobs, found_jobs
        assert len(found_skips) == skipped, found_skips
        return ({j["enrollment_id"]: j for j in found_jobs},
                {o["enrollment_id"]: o for o in found_skips})

    def metric(self, name: str, **labels: str) -> float:
        """The current value of one series of the worker's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        series = f"{name}{{{wanted}}}" if labels else name
        match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
        assert match, f"{series} not exported"
        return float(match.group(1))


def _record(msg: Any) -> dict[str, Any]:
    return SERDE.decode_as(msg.value(), "DeviceRecord")


def _wait_ready(fleet: Fleet, timeout_s: float = 240.0) -> None:
    """Until the worker's /readyz answers 200 (started, partitions held): a loaded machine may
    take longer to start a worker than a test waits for one record."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{fleet.metrics_port}/readyz"
    while time.monotonic() < deadline:
        if not fleet.worker.alive():
            raise AssertionError(f"fan-out worker died:\n{fleet.worker.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, or 503 until ready
            pass
        time.sleep(0.5)
    raise AssertionError(f"fan-out worker not ready:\n{fleet.worker.log_tail()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def activity(eid: str, state: str, at: int) -> dict[str, Any]:
    return {"tenant": "acme", "enrollment_id": eid, "state": state, "last_contact_at": None,
            "at": at}


@pytest.fixture(scope="module")
def fleets(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fleet]]:
    made: dict[str, Fleet] = {}
    env = {
        "long": {"MDMPUSH_FANOUT_COALESCE_WINDOW_MS": "3600000"},
        "short": {"MDMPUSH_FANOUT_COALESCE_WINDOW_MS": "1",
                  "MDMPUSH_FANOUT_PENDING_ENROLLMENT_TTL_MS": "1",
                  "MDMPUSH_FANOUT_REGISTRY_SWEEP_INTERVAL_S": "0.3"},
    }
    for name, extra in env.items():
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap,
                              topic_prefix=f"t{uuid.uuid4().hex[:10]}.", linger_ms=1)
        create_topics(kafka, all_topics(), partitions_override=2)
        topics = Topics(kafka.topic_prefix)
        pub = Publisher(kafka)
        if name == "long":  # read by the worker before its first expansion
            pub.record(topics.activity, "EnrollmentActivity", activity("X1", "INACTIVE", AT), "X1")
            pub.record(topics.activity, "EnrollmentActivity", activity("X2", "INACTIVE", AT), "X2")
            pub.record(topics.activity, "EnrollmentActivity", activity("X2", "ACTIVE", AT + 1),
                       "X2")
        port = _free_port()
        worker = Worker(kafka, Path(tmp_path_factory.mktemp(f"fanout-{name}")),
                        MDMPUSH_FANOUT_METRICS_PORT=str(port), **extra)
        worker.start()
        made[name] = Fleet(
            kafka, topics, worker, pub,
            bulk=Reader(kafka, topics.jobs_bulk, "PushJob"),
            priority=Reader(kafka, topics.jobs_priority, "PushJob"),
            outcomes=Reader(kafka, topics.outcomes, "PushOutcome"),
            registry=Reader(kafka, topics.registry, None),
            metrics_port=port,
        )
    try:
        for fleet in made.values():
            _wait_ready(fleet)
        yield made
    finally:
        _tear_down(made)


def _tear_down(made: dict[str, Fleet]) -> None:
    for fleet in made.values():
        fleet.worker.stop()
        for reader in (fleet.bulk, fleet.priority, fleet.outcomes, fleet.registry):
            reader.close()
        admin = admin_client(fleet.kafka)
        mine = [t for t in admin.list_topics(timeout=10).topics
                if t.startswith(fleet.kafka.topic_prefix)]
        for future in admin.delete_topics(mine, operation_timeout=30).values():
            future.exception(30)


@pytest.fixture(scope="module")
def long(fleets: dict[str, Fleet]) -> Fleet:
    return fleets["long"]


@pytest.fixture(scope="module")
def short(fleets: dict[str, Fleet]) -> Fleet:
    return fleets["short"]


def test_counters_are_exported_at_zero_from_the_start(short: Fleet) -> None:
    short.checkins(enroll("Z0"))
    short.device("Z0", lambda r: r["state"] == "ENROLLED")  # the worker is up
    for reason in ("coalesced", "inactive"):
        assert short.metric("mdmpush_fanout_skipped_total", reason=reason) == 0
    for reason in ("no_tenant", "unknown_enrollment"):
        assert short.metric("mdmpush_fanout_checkins_refused_total", reason=reason) == 0


# -- coalescing ---------------------------------------------------------------------------------
def test_a_bulk_request_rides_on_the_outstanding_push_until_the_device_checks_in(
        long: Fleet) -> None:
    long.checkins(enroll("C1") + enroll("C2") + enroll("C3"))
    for eid in ("C1", "C2", "C3"):
        long.device(eid, lambda r: r["state"] == "ENROLLED")
    before = long.metric("mdmpush_fanout_skipped_total", reason="coalesced")

    long.request("rc-1", ["C1", "C2"])
    jobs, _ = long.results("rc-1", jobs=2, skipped=0)
    assert set(jobs) == {"C1", "C2"}

    long.request("rc-2", ["C1", "C2", "C3"])
    jobs, skips = long.results("rc-2", jobs=1, skipped=2)
    assert set(jobs) == {"C3"}
    assert {eid: (s["state"], s["reason"], s["rides_on"], s["job_id"], s["lane"])
            for eid, s in skips.items()} == {
        "C1": ("SKIPPED", "coalesced", "rc-1/C1", "rc-2/C1", "BULK"),
        "C2": ("SKIPPED", "coalesced", "rc-1/C2", "rc-2/C2", "BULK"),
    }

    # C1 answers (any check-in); its next record proves the fan-out has seen it.
    long.checkins([checkin("C1", "COMMAND_REPORT", AT + 500, status="Idle")])
    long.device("C1", lambda r: r["last_contact_at"] == AT + 500)
    long.request("rc-3", ["C1", "C2"])
    jobs, skips = long.results("rc-3", jobs=1, skipped=1)
    assert set(jobs) == {"C1"}
    assert skips["C2"]["rides_on"] == "rc-1/C2", "C2 has not answered: still rides on rc-1"
    assert long.metric("mdmpush_fanout_skipped_total", reason="coalesced") == before + 3
    assert long.metric("mdmpush_fanout_carriers_answered_total") >= 1


def test_priority_is_never_coalesced_and_becomes_the_carrier(long: Fleet) -> None:
    long.checkins(enroll("P2"))
    long.device("P2", lambda r: r["state"] == "ENROLLED")
    long.request("rp-1", ["P2"])
    long.results("rp-1", jobs=1, skipped=0)
    long.request("rp-2", ["P2"], initiator="USER")
    jobs, _ = long.results("rp-2", jobs=1, skipped=0)
    assert jobs["P2"]["lane"] == "PRIORITY"
    long.request("rp-3", ["P2"])
    _, skips = long.results("rp-3", jobs=0, skipped=1)
    assert skips["P2"]["rides_on"] == "rp-2/P2"


def test_a_carrier_survives_a_worker_restart(long: Fleet) -> None:
    long.checkins(enroll("R1"))
    long.device("R1", lambda r: r["state"] == "ENROLLED")
    long.request("rr-1", ["R1"])
    long.results("rr-1", jobs=1, skipped=0)
    long.worker.stop()
    long.worker.start()  # a fresh data directory: the carrier comes back from its changelog
    _wait_ready(long)
    long.request("rr-2", ["R1"])
    _, skips = long.results("rr-2", jobs=0, skipped=1)
    assert skips["R1"]["rides_on"] == "rr-1/R1"


def test_past_the_window_every_request_is_pushed(short: Fleet) -> None:
    short.checkins(enroll("W1"))
    short.device("W1", lambda r: r["state"] == "ENROLLED")
    short.request("rw-1", ["W1"])
    short.results("rw-1", jobs=1, skipped=0)
    short.request("rw-2", ["W1"])
    jobs, _ = short.results("rw-2", jobs=1, skipped=0)
    assert jobs["W1"]["job_id"] == "rw-2/W1"


# -- inactive enrollments -----------------------------------------------------------------------
def test_bulk_skips_inactive_enrollments_priority_pushes_them(long: Fleet) -> None:
    before = long.metric("mdmpush_fanout_skipped_total", reason="inactive")
    long.checkins(enroll("X1") + enroll("X2"))
    for eid in ("X1", "X2"):
        long.device(eid, lambda r: r["state"] == "ENROLLED")
    long.request("ri-1", ["X1", "X2"])
    jobs, skips = long.results("ri-1", jobs=1, skipped=1)
    assert set(jobs) == {"X2"}, "X2 became ACTIVE again after being INACTIVE"
    assert (skips["X1"]["reason"], skips["X1"]["rides_on"]) == ("inactive", None)
    assert long.metric("mdmpush_fanout_skipped_total", reason="inactive") == before + 1
    long.request("ri-2", ["X1"], initiator="USER")
    jobs, _ = long.results("ri-2", jobs=1, skipped=0)
    assert jobs["X1"]["lane"] == "PRIORITY"


# -- the registry's bounds ----------------------------------------------------------------------
def test_a_checkin_without_tenant_or_an_unknown_non_enrolling_one_makes_no_record(
        long: Fleet) -> None:
    no_tenant = long.metric("mdmpush_fanout_checkins_refused_total", reason="no_tenant")
    unknown = long.metric("mdmpush_fanout_checkins_refused_total", reason="unknown_enrollment")
    long.checkins([*enroll("N1", tenant=""), checkin("K1", "CHECK_OUT", AT),
                   checkin("K1", "COMMAND_REPORT", AT + 1, status="Idle")])
    # Sentinels on the same keys (same partition, read after them).
    long.checkins([checkin("N1", "AUTHENTICATE", AT + 100, topic=T1),
                   checkin("K1", "AUTHENTICATE", AT + 100, topic=T1)])
    for eid in ("N1", "K1"):
        long.device(eid, lambda r: r["last_contact_at"] == AT + 100)
        assert [(r["tenant"], r["state"]) for r in long.history(eid) if r is not None] == [
            ("acme", "AUTHENTICATED")], "the refused check-ins made a record"
    assert long.metric("mdmpush_fanout_checkins_refused_total", reason="no_tenant") \
        == no_tenant + 2
    assert long.metric("mdmpush_fanout_checkins_refused_total",
                       reason="unknown_enrollment") == unknown + 2


def test_an_authenticate_never_followed_by_a_token_update_expires(short: Fleet) -> None:
    # Q2 enrolls with one TokenUpdate: never pending, not even between two sweeps.
    short.checkins([checkin("Q1", "AUTHENTICATE", AT, topic=T1), enroll("Q2")[1]])
    short.device("Q2", lambda r: r["state"] == "ENROLLED")
    short.registry.wait(lambda items: any(m.key() == b"Q1" and m.value() is None
                                          for m in items), worker=short.worker)
    assert short.history("Q1")[-1] is None and short.history("Q1")[0] is not None
    assert None not in short.history("Q2"), "an enrolled device is never swept"
    assert short.metric("mdmpush_fanout_pending_enrollments_expired_total") >= 1
    short.request("rq-1", ["Q1", "Q2"])
    jobs, skips = short.results("rq-1", jobs=1, skipped=1)
    assert set(jobs) == {"Q2"} and skips["Q1"]["reason"] == "unknown_enrollment"
