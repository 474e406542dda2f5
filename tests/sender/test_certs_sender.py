"""A real sender process (`python -m services.sender`) on the real broker and the HTTP/2 TLS APNs
simulator gets its push certificate renewed, then replaced by one created instead of renewed,
while it sends: the renewal is used without a restart, the created one is refused and sending
goes on with the old one; the gauges on its /metrics say so, with the enrollments per topic
counted from the registry topic, as `mdmpush certs list --enrollments` counts them."""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.kafka.producer import ReliableProducer
from services.common.push_certs import read_certificate_file
from services.common.settings import KafkaSettings
from services.devstack.procs import free_port
from services.sim.apns.certs import issue_push_certificate, mdm_topic
from services.sim.apns.server import SimulatorThread
from tests.support.sender_harness import (
    SERDE,
    Pki,
    Reader,
    job,
    produce_jobs,
    sender_settings,
    spawn_sender,
)

Gauges = dict[tuple[str, str], float]


def scrape(port: int) -> Gauges:
    """Every push-certificate sample of the sender's /metrics, by (name, topic)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, s.labels["topic"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name.startswith("mdmpush_push_certificate_")
            for s in family.samples}


def wait_gauges(port: int, holds: Callable[[Gauges], bool], limit_s: float = 30) -> Gauges:
    deadline = time.monotonic() + limit_s
    seen: Gauges = {}
    while time.monotonic() < deadline:
        try:
            seen = scrape(port)
        except OSError:  # the process is still starting
            seen = {}
        if holds(seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"gauges never matched: {seen}")


def enroll(kafka: KafkaSettings, registry: str, records: list[tuple[str, str, str]]) -> None:
    """Publish DeviceRecords (enrollment id, topic, state) as the fan-out does."""
    producer = ReliableProducer(kafka, name="test-registry")
    try:
        for eid, topic, state in records:
            record: dict[str, Any] = {
                "enrollment_id": eid, "tenant": "acme", "udid": eid, "state": state,
                "topic": topic, "token_hex": "ab" * 32, "push_magic": f"magic-{eid}",
                "enrolled_at": None, "token_updated_at": None, "last_contact_at": None,
                "token_dead_since": None, "updated_at": int(time.time() * 1000)}
            producer.produce(registry, SERDE.encode("DeviceRecord", record, registry), key=eid)
        producer.flush(30)
    finally:
        producer.close()


def send_batch(kafka: KafkaSettings, topics: Topics, outcomes: Reader, topic: str,
               first: int, count: int = 30) -> None:
    """Jobs `first`..`first+count` for `topic`; every one must end SENT."""
    jobs = [job(topic, n, request=f"batch-{first}") for n in range(first, first + count)]
    produce_jobs(kafka, topics.jobs_bulk, jobs)
    wanted = {j["job_id"] for j in jobs}
    records = outcomes.wait(
        lambda rs: wanted <= {r["job_id"] for r in rs if r["state"] in ("SENT", "FAILED")}, 60)
    states = {r["job_id"]: r["state"] for r in records if r["job_id"] in wanted}
    assert set(states.values()) == {"SENT"}, states


def test_renewal_is_used_and_a_created_certificate_is_refused_while_the_sender_runs(
    kafka_settings: KafkaSettings, retry_ready: Topics, pki: Pki, sim: SimulatorThread,
    outcomes: Reader, tmp_path: Path,
) -> None:
    mine, other = pki.topics
    enroll(kafka_settings, retry_ready.registry,
           [(f"A{n}", mine, "ENROLLED") for n in range(25)]
           + [(f"B{n}", other, "ENROLLED") for n in range(7)]
           + [(f"A{n}", mine, "CHECKED_OUT") for n in range(5)])  # the latest record counts
    port = free_port()
    settings = sender_settings(pki, sim.url, metrics_port=port, cert_reload_s=0.2,
                               enrollment_count_s=0.5)
    log = tmp_path / "sender.log"
    process = spawn_sender(settings, kafka_settings, log)
    try:
        pem = pki.cert_dir / f"{mine}.pem"
        first = read_certificate_file(pem)
        wait_gauges(port, lambda g: g.get(("mdmpush_push_certificate_enrollments", mine)) == 20
                    and g.get(("mdmpush_push_certificate_enrollments", other)) == 7)
        start = scrape(port)
        assert start[("mdmpush_push_certificate_expiry_timestamp_seconds", mine)] == \
            first.not_after.timestamp()
        assert start[("mdmpush_push_certificate_replacement_refused", mine)] == 0
        assert start[("mdmpush_push_certificate_unreachable_enrollments", mine)] == 0
        send_batch(kafka_settings, retry_ready, outcomes, mine, 0)

        # Renewed (same topic, new serial, new validity): used without a restart; APNs now
        # refuses the old one, so only the renewed certificate can carry the next batch.
        renewed = issue_push_certificate(pki.pki.ca, mine, pki.cert_dir, valid_days=400)
        not_after = read_certificate_file(pem).not_after.timestamp()
        wait_gauges(port, lambda g: g.get(
            ("mdmpush_push_certificate_expiry_timestamp_seconds", mine)) == not_after)
        sim.faults.revoke(serials=[first.serial])
        send_batch(kafka_settings, retry_ready, outcomes, mine, 100)

        # Created instead of renewed: another topic in <mine>.pem. Refused, the renewed one
        # stays in use; 20 enrollments would have become unreachable.
        created = issue_push_certificate(pki.pki.ca, mdm_topic(), pki.cert_dir, name=mine)
        refused = wait_gauges(port, lambda g: g.get(
            ("mdmpush_push_certificate_replacement_refused", mine)) == 1)
        assert refused[("mdmpush_push_certificate_unreachable_enrollments", mine)] == 20
        assert refused[("mdmpush_push_certificate_expiry_timestamp_seconds", mine)] == not_after
        assert refused[("mdmpush_push_certificate_replacement_refused", other)] == 0
        sim.faults.revoke(serials=[created.serial])
        send_batch(kafka_settings, retry_ready, outcomes, mine, 200)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
    text = log.read_text()
    refusals = [line for line in text.splitlines() if f"{mine}.pem refused" in line]
    assert len(refusals) == 1, text[-3000:]
    assert "20 enrollments" in refusals[0] and created.topic in refusals[0]
    assert format(renewed.serial, "X") in refusals[0]  # "still using serial <renewed>"
    assert sim.snapshot().status(403) == 0  # no push ever went out on a refused certificate


def test_certs_list_counts_the_enrollments_of_each_certificate(
    cli_env: Topics, kafka_settings: KafkaSettings, pki: Pki,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mine, other = pki.topics
    enroll(kafka_settings, cli_env.registry,
           [(f"A{n}", mine, "ENROLLED") for n in range(4)]
           + [("A0", mine, "CHECKED_OUT"), ("X1", "com.apple.mgmt.External.elsewhere", "ENROLLED")])
    assert main(["certs", "list", str(pki.cert_dir), "--enrollments"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "enrollments"
    counts = {line.split()[0]: line.split()[-1] for line in lines[1:]}
    assert counts == {mine: "3", other: "0"}
