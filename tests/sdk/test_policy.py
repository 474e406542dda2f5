"""`mdmpush policy` / PolicyPublisher: what an operator publishes is what a sender applies."""

from __future__ import annotations

import pytest

from services.cli.main import main
from services.common.catalogue import Topics
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sdk.policy import PushPolicy
from services.sender.policy import PolicyBook, policy_view

CERT = "com.apple.mgmt.External.5a0c3c36-0b9e-4b8b-a4f3-54c6f2a3d2a1"
FALLBACK = PushPolicy(bulk_per_minute=7.0)


def sender_view(kafka: KafkaSettings, topics: Topics) -> PushPolicy:
    """The policy a sender starting now would apply to CERT."""
    book = PolicyBook(FALLBACK, policy_view(kafka, topics.config, AvroSerde()))
    try:
        book.load()
    finally:
        book.close()
    return book.for_topic(CERT)


@pytest.mark.kafka
def test_policy_set_then_clear_reaches_the_sender(
    kafka_settings: KafkaSettings, cli_env: Topics, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policy", "set", CERT, "--bulk-per-minute", "50", "--scope", "per_instance",
                 "--shards", "2", "--max-attempts", "3"]) == 0
    assert sender_view(kafka_settings, cli_env) == PushPolicy(
        certificate=CERT, bulk_per_minute=50.0, scope="PER_INSTANCE", shards=2, max_attempts=3)
    assert main(["policy", "clear", CERT]) == 0
    assert sender_view(kafka_settings, cli_env) == FALLBACK  # the tombstone removed it
    assert "cleared" in capsys.readouterr().out


def test_invalid_policy_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "set", CERT, "--shards", "0"]) == 2
    assert "shards and max_attempts are at least 1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="pushes per minute"):
        PushPolicy(CERT, bulk_per_minute=-1).to_record()
    with pytest.raises(ValueError, match="scope is one of FARM, PER_INSTANCE"):
        PushPolicy(CERT, scope="per_server").to_record()
