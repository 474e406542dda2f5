"""A flood of check-ins for enrollments nobody enrolled, on the real broker, against a fan-out
worker and a correlator (both real processes): the state either keeps stays within its bound.

Issue 8 item 5: whoever can write check-ins (a tenant's gateway credential, or any producer of
`mdm.checkin.events.v1`) must not be able to grow the registry or the correlator without limit
(docs/security.md, docs/fanout-bounds.md). Here:
- the fan-out's registry (its table's changelog and `mdm.device.registry.v1`) ends holding the
  real enrollments only: non-enrolling check-ins of unknown ids and tenant-less ones make no
  record at all, Authenticates never followed by a TokenUpdate make one that the sweep removes
  (a pending TTL of 1 ms, a sweep every 0.3 s);
- the correlator's book holds exactly `max_enrollments` rows, the rest of the flood refused and
  counted, and a push to a real enrollment is still answered by its check-in;
- mixed in, another tenant's forged TokenUpdate and CheckOut for every real enrollment (what
  that tenant's own gateway credential publishes, tests/gateway/test_attacks.py): refused and
  counted by both services, every victim's registry record unchanged.
Nothing waits on wall time except for the counters and records to arrive.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.producer import ReliableProducer
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port
from tests.correlator.harness import Correlator, Feed, verdicts
from tests.correlator.harness import Reader as CorrelatorReader
from tests.fanout.harness import SERDE, T1, Reader, Worker, checkin, token

pytestmark = pytest.mark.kafka

REAL = [f"R{i}" for i in range(10)]
#: The correlator's cap: the real enrollments and the first 40 flood ids it sees.
MAX_ENROLLMENTS = 50
#: Per kind of flood check-in (different ids for each kind).
FLOOD = 200
#: Longest wait for a counter or record (a shared, loaded machine; never a figure asserted).
WAIT_S = 120.0

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Metrics:
    """Every sample of a service's /metrics (empty while it does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


def wait_for(what: str, until: Callable[[], bool], logs: Callable[[bool], str | None]) -> None:
    """Until `until()`; fail at once when a process died. `logs(False)` is the log of a process
    that died (None while both run), `logs(True)` both logs' tails."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if until():
            return
        died = logs(False)
        if died is not None:
            raise AssertionError(f"a service died while waiting for {what}:\n{died}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{logs(True)}")


def latest(messages: list[Any], decode_key: Callable[[bytes], str]) -> dict[str, bytes | None]:
    """Key -> its last value (None: a tombstone), as compaction would leave the topic."""
    return {decode_key(m.key()): m.value() for m in messages}


def test_a_flood_of_unknown_enrollments_stays_within_the_registry_and_correlator_bounds(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    clock = Clock()
    fanout_port, correlator_port = free_port(), free_port()
    worker = Worker(kafka_settings, tmp_path / "fanout",
                    MDMPUSH_FANOUT_METRICS_PORT=str(fanout_port),
                    MDMPUSH_FANOUT_PENDING_ENROLLMENT_TTL_MS="1",
                    MDMPUSH_FANOUT_REGISTRY_SWEEP_INTERVAL_S="0.3")
    correlator = Correlator(kafka_settings, clock, max_enrollments=MAX_ENROLLMENTS,
                            metrics_port=correlator_port)
    feed = Feed(kafka_settings, topics, clock)
    producer = ReliableProducer(kafka_settings, name="test-flood")
    registry = Reader(kafka_settings, topics.registry, None)
    changelog: Reader | None = None  # faust creates its topic at start
    outcomes = CorrelatorReader(kafka_settings, topics.outcomes, "PushOutcome")

    def died(always: bool) -> str | None:
        fanout_log = f"fan-out:\n{worker.log_tail()}"
        correlator_log = f"correlator:\n{correlator.log.read_text(errors='replace')[-4000:]}"
        if always:
            return f"{fanout_log}\n{correlator_log}"
        if not worker.alive():
            return fanout_log
        if correlator.proc is None or correlator.proc.poll() is not None:
            return correlator_log
        return None

    def fanout(name: str, **labels: str) -> float | None:
        return value(scrape(fanout_port), name, **labels)

    def correlator_metric(name: str) -> float | None:
        return value(scrape(correlator_port), name)

    try:
        worker.start()
        correlator.start()
        # The real fleet: one TokenUpdate each (never pending, not even between two sweeps).
        now = clock.now_ms()
        for eid in REAL:
            feed.checkin(eid, "TOKEN_UPDATE", now, topic=T1, token_hex=token(eid),
                         push_magic=f"magic-{eid}")
        wait_for("the correlator's book of the real enrollments",
                 lambda: correlator_metric("mdmpush_correlator_enrollments") == len(REAL), died)
        wait_for("the real enrollments in the registry", lambda: {
            m.key().decode() for m in registry.settle(0.2)} >= set(REAL), died)
        victims = {k: v for k, v in latest(registry.settle(0.2), bytes.decode).items() if k in REAL}
        changelog = Reader(kafka_settings,
                           f"{kafka_settings.topic_prefix}mdmpush-fanout-registry-changelog", None)

        # The flood: ids nobody enrolled, four kinds of check-in, one id each.
        now = clock.now_ms()
        flood = {
            "report": [checkin(f"U{i}", "COMMAND_REPORT", now, status="Idle")
                       for i in range(FLOOD)],
            "checkout": [checkin(f"C{i}", "CHECK_OUT", now) for i in range(FLOOD)],
            "authenticate": [checkin(f"A{i}", "AUTHENTICATE", now, topic=T1)
                             for i in range(FLOOD)],
            "no_tenant": [checkin(f"N{i}", "AUTHENTICATE", now, tenant="", topic=T1)
                          for i in range(FLOOD)],
        }
        # Tenant globex's check-ins for acme's enrollments: a new token and PushMagic, a CheckOut.
        foreign = [e for eid in REAL for e in (
            checkin(eid, "TOKEN_UPDATE", now, tenant="globex", topic=T1,
                    token_hex=token(f"evil-{eid}"), push_magic="magic-evil"),
            checkin(eid, "CHECK_OUT", now + 1, tenant="globex"))]
        for event in [*(e for events in flood.values() for e in events), *foreign]:
            producer.produce(topics.checkins,
                             SERDE.encode("CheckinEvent", event, topics.checkins),
                             event["enrollment_id"])
        producer.flush(60)
        flooded = {e["enrollment_id"] for events in flood.values() for e in events}

        # The fan-out refused or expired every one of them.
        refused = "mdmpush_fanout_checkins_refused_total"
        wait_for("the fan-out's refusals and expiries", lambda: (
            fanout(refused, reason="unknown_enrollment") == 2 * FLOOD
            and fanout(refused, reason="no_tenant") == FLOOD
            and fanout("mdmpush_fanout_pending_enrollments_expired_total") == FLOOD
            and fanout("mdmpush_fanout_foreign_checkins_total") == len(foreign)), died)
        # The correlator kept its cap and counted the rest, and refused the foreign check-ins.
        wait_for("the correlator's refusals", lambda: correlator_metric(
            "mdmpush_correlator_refused_enrollments_total")
            == len(flooded) - (MAX_ENROLLMENTS - len(REAL))
            and correlator_metric("mdmpush_correlator_foreign_checkins_total") == len(foreign),
            died)
        assert correlator_metric("mdmpush_correlator_enrollments") == MAX_ENROLLMENTS
        assert {k: v for k, v in latest(registry.settle(0.5), bytes.decode).items()
                if k in REAL} == victims, "a foreign check-in changed a victim's record"

        # Known enrollments still work: a push to R0 is answered by R0's check-in.
        feed.outcome("R0", request="after-flood", topic=T1, token_hex=token("R0"))
        feed.checkin("R0", "COMMAND_REPORT", clock.now_ms() + 1, status="Idle")
        answered = outcomes.wait(lambda rs: any(r["request_id"] == "after-flood"
                                                for r in verdicts(rs)),
                                 timeout_s=WAIT_S, what="the verdict of R0's push")
        assert [r["state"] for r in verdicts(answered)] == ["ANSWERED"]

        # What the registry holds now: the real enrollments, nothing of the flood.
        live = {k for k, v in latest(registry.settle(0.5), bytes.decode).items() if v is not None}
        assert live == set(REAL)
        table = latest(changelog.settle(0.5), lambda key: str(json.loads(key)))
        assert {k for k, v in table.items() if v is not None} == set(REAL)
        # Only Authenticates with a tenant ever made a record, and each was swept since.
        assert set(table) - set(REAL) == {e["enrollment_id"] for e in flood["authenticate"]}
        assert {SERDE.decode_as(m.value(), "DeviceRecord")["state"] for m in registry.items
                if m.key().decode() in flooded and m.value() is not None} == {"AUTHENTICATED"}
    finally:
        worker.stop()
        correlator.stop()
        producer.close()
        registry.close()
        if changelog is not None:
            changelog.close()
        outcomes.close()
