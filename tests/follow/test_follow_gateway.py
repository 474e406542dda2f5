"""The push API's answer says how to follow the request; that command, run as given, follows it."""

from __future__ import annotations

import shlex

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.settings import KafkaSettings
from tests.follow.outcomes import produce_outcomes
from tests.gateway.harness import ACME_KEY, basic, running_gateway


@pytest.mark.kafka
def test_the_follow_command_of_a_push_answer_follows_the_request(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    with running_gateway(kafka_settings, cli_env) as gateway, gateway.client() as client:
        answer = client.put("/v1/push/UDID-1,UDID-2", headers=basic(ACME_KEY))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    follow = body["follow"]
    assert answer.headers["X-Mdmpush-Follow"] == follow
    assert body["request_id"] in follow and str(body["requested_at"]) in follow

    produce_outcomes(kafka_settings, cli_env, body["request_id"],
                     [("UDID-1", "ANSWERED", None), ("UDID-2", "SKIPPED", "unknown_enrollment")])
    argv = shlex.split(follow)
    assert argv[0] == "mdmpush"
    assert main([*argv[1:], "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "2 target(s), complete" in out and "unknown_enrollment 1" in out
