"""Property-based fuzzing of the live gateway on the real broker, driven by its OpenAPI description.

schemathesis generates valid (positive) and invalid (negative) requests for every operation the
served /openapi.json describes, sends them with a valid credential (webhook bodies signed), and
checks every answer: no 5xx, status code, content type, headers and body as described, invalid
data refused, the described examples accepted. CI runs a bounded, derandomized number of
examples per operation and mode; MDMPUSH_FUZZ_EXAMPLES=N runs N (randomized) instead. The
figures are printed at the end (-s).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok

from services.common.catalogue import Topics
from services.common.principals import hmac_signature
from services.common.settings import KafkaSettings
from tests.gateway.harness import ACME_KEY, ACME_SECRET, basic, running_gateway

LARGE = os.environ.get("MDMPUSH_FUZZ_EXAMPLES")
EXAMPLES = int(LARGE) if LARGE else 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]


def _send(case: Case, base_url: str, session: requests.Session) -> requests.Response:
    """Send a case as a client with credentials would (Basic auth, webhook bodies signed),
    unless the case is negative in its headers: then its generated (invalid) credentials go."""
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=base_url)
    if case.meta is not None and case.meta.components.get(
            ParameterLocation.HEADER, None) is not None and case.meta.components[
            ParameterLocation.HEADER].mode is GenerationMode.NEGATIVE:
        return session.request(**kwargs, timeout=30)
    headers = dict(kwargs.pop("headers", None) or {})
    if case.operation.path == "/webhook":
        body = kwargs.pop("json", None)
        data = kwargs.pop("data", None)
        raw = data if isinstance(data, bytes) else json.dumps(body).encode()
        kwargs["data"] = raw
        headers["X-Hmac-Signature"] = hmac_signature(raw, ACME_SECRET.encode())
        headers["Content-Type"] = "application/json"
    elif case.operation.definition.raw.get("security"):
        headers.update(basic(ACME_KEY))
    kwargs["headers"] = headers
    return session.request(**kwargs, timeout=30)


@pytest.mark.kafka
@pytest.mark.timeout(7200 if LARGE else 300)
def test_fuzz_the_live_gateway(kafka_settings: KafkaSettings, topics: Topics) -> None:
    statuses: Counter[str] = Counter()
    operations: list[str] = []
    with running_gateway(kafka_settings, topics) as gw, requests.Session() as session:
        served = session.get(gw.base_url + "/openapi.json", timeout=30).json()
        schema = schemathesis.openapi.from_dict(served)  # from_url would skip that operation
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), f"the served description is invalid: {result}"
            operation = result.ok()
            operations.append(operation.label)
            raw = operation.definition.raw
            has_input = raw.get("parameters") or raw.get("requestBody") or raw.get("security")
            strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
            if has_input:  # else nothing to make invalid
                strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
            strategies += schema.get_strategies_from_examples(operation)  # described examples
            for strategy in strategies:
                label = operation.label

                @given(case=strategy)
                @settings(max_examples=EXAMPLES, deadline=None, database=None,
                          derandomize=LARGE is None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck))
                def run(case: Case) -> None:
                    response = _send(case, gw.base_url, session)
                    statuses[f"{label} -> {response.status_code}"] += 1  # noqa: B023
                    case.validate_response(response, checks=CHECKS)

                run()
    total = sum(statuses.values())
    print(f"\nschemathesis: {len(operations)} operations, {total} requests, 0 failures "
          f"(up to {EXAMPLES} examples per operation and mode)")
    for line in sorted(statuses):
        print(f"  {line}: {statuses[line]}")
    assert len(operations) == 10, "; ".join(operations)
    assert not any(key.endswith(("-> 500", "-> 502", "-> 503")) for key in statuses)
    # The credential works: valid requests are accepted, not only refused (the described
    # examples of a check-in and a webhook event among them).
    for accepted in ("GET /push/{udid} -> 202", "PUT /checkin -> 200", "POST /webhook -> 200"):
        assert statuses[accepted], accepted
