"""Records over Kafka's size limit in the middle of a stream of requests: every service on the
path must set each one aside with the reason, keep working and lose nothing: the stream's
accounting holds, and every such record ends in the DLQ, put there by each service that reads
its topic (the DLQ topic deleted meanwhile: test_dlq_faults.py). Runs on the session's broker:
it changes a config of its own prefixed topic only."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from services.devstack.pipeline import Pipeline
from tests.faults import cases, poison
from tests.faults.conftest import full_only
from tests.faults.harness import Sampler, assert_met, run_case
from tests.faults.test_service_faults import _build
from tests.pipeline.conftest import OWN_POISON_KEY, PipelineFactory
from tests.support.topic_limits import until_the_broker_refuses


def once_the_limit_applies(pipeline: Pipeline, fault: cases.Fault) -> cases.Fault:
    """`records_over_the_size_limit`, started once the broker refuses what it must refuse (it
    sets the same limit again, then lifts it)."""
    def run(sampler: Sampler) -> float:
        topic = pipeline.topics.jobs_priority
        cases._topic_config(pipeline, topic, "max.message.bytes", str(cases.SMALL_TOPIC_BYTES))
        try:
            until_the_broker_refuses(pipeline.kafka, topic,
                                     os.urandom(2 * cases.SMALL_TOPIC_BYTES), OWN_POISON_KEY)
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

