"""Records over Kafka's size limit in the middle of a stream of requests: every service on the
path must set each one aside with the reason, keep working and lose nothing: the stream's
accounting holds, and every such record ends in the DLQ, put there by each service that reads
its topic (the DLQ topic deleted meanwhile: test_dlq_faults.py). Runs on the session's broker:
it changes a config of its own prefixed topic only."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Producer

from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from services.devstack.pipeline import Pipeline
from tests.faults import cases, poison
from tests.faults.conftest import full_only
from tests.faults.harness import Sampler, assert_met, run_case
from tests.faults.test_service_faults import _build
from tests.pipeline.conftest import OWN_POISON_KEY, PipelineFactory


def until_the_broker_refuses(kafka: KafkaSettings, topic: str, size: int,
                             timeout_s: float = 60.0) -> None:
    """Return once the broker refuses a record of `size` incompressible bytes to `topic`: it
    applies a lowered `max.message.bytes` from ZooKeeper asynchronously (seconds on a loaded
    machine), and a record produced before that is accepted and never dead-lettered. A probe
    accepted meanwhile is poison to the topic's reader, which sets it aside."""
    probe = os.urandom(size)
    producer = Producer(kafka.producer_config(), logger=client_logger("test-probe"))
    errors: list[KafkaError] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        errors.clear()
        producer.produce(topic, probe, OWN_POISON_KEY,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
        producer.flush(30)
        if errors and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
            return
        time.sleep(0.2)
    raise AssertionError(f"{topic}: max.message.bytes not applied within {timeout_s:.0f} s")


def once_the_limit_applies(pipeline: Pipeline, fault: cases.Fault) -> cases.Fault:
    """`records_over_the_size_limit`, started once the broker refuses what it must refuse (it
    sets the same limit again, then lifts it)."""
    def run(sampler: Sampler) -> float:
        topic = pipeline.topics.jobs_priority
        cases._topic_config(pipeline, topic, "max.message.bytes", str(cases.SMALL_TOPIC_BYTES))
        try:
            until_the_broker_refuses(pipeline.kafka, topic, 2 * cases.SMALL_TOPIC_BYTES)
        except AssertionError:
            cases._topic_config(pipeline, topic, "max.message.bytes", None)
            raise
        return fault(sampler)
    return run


def dead_lettered(pipeline: Pipeline, written: cases.Written
                   ) -> Callable[[], tuple[int, list[str]]]:
    """How many records had to be set aside, and which were not (after waiting for them): each
    poison record by each of its readers, each oversize request by the fan-out, with Kafka's
    reason."""
    def check() -> tuple[int, list[str]]:
        missing = poison.missing_dead_letters(pipeline.kafka, written.poison, timeout_s=180)
        requests = poison.dead_lettered_requests(pipeline.kafka)
        missing += [f"request {rid} ({len(targets)} targets)"
                    for rid, targets in written.oversize.items()
                    if "MSG_SIZE_TOO_LARGE" not in requests.get(rid, "")]
        expected = sum(len(readers) for readers in written.poison.values()) + len(
            written.oversize)
        return expected, missing
    return check


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(900)
@full_only
def test_records_over_the_size_limit_mid_run(pipeline_factory: PipelineFactory) -> None:
    pipeline, scenario, tracker = _build(pipeline_factory)
    ids = sorted(t.enrollment_id for t in scenario.truth)
    written = cases.Written()
    result = run_case("records over the size limit", pipeline, scenario, tracker,
                      once_the_limit_applies(pipeline, cases.records_over_the_size_limit(
                          pipeline, scenario.truth[0].tenant, ids, written)),
                      poison=dead_lettered(pipeline, written))
    assert_met(result, pipeline)
    assert result.poison == 5 + cases.OVERSIZE_REQUESTS  # the fault was met
    # No job of an oversize request went anywhere: refused whole, set aside whole, and each of
    # its targets ends DEAD_LETTERED once, with Kafka's reason (services/fanout/expand.py).
    outcomes, _ = tracker.snapshot()
    refused = [o for o in outcomes if o["request_id"] in written.oversize]
    assert sorted((o["request_id"], o["enrollment_id"]) for o in refused) == sorted(
        (rid, target) for rid, targets in written.oversize.items() for target in targets)
    assert all(o["state"] == "DEAD_LETTERED" and "MSG_SIZE_TOO_LARGE" in (o["reason"] or "")
               for o in refused), refused
    # The near-limit poison's dead letters could not carry the value: they say so instead.
    found = poison.dead_letters(pipeline.kafka)
    assert all(d.value_dropped for source in written.poison for d in found[source]), found

