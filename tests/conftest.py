"""Fixtures shared by every test: the real broker, per-test topic isolation, settings."""

from __future__ import annotations

import concurrent.futures
import os
import uuid
import warnings
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from confluent_kafka.admin import AdminClient

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from tests.support.broker import Broker, broker_version, planned_broker, provide_broker

#: What the session's broker turned out to be, for the closing summary (empty if none started).
_BROKER_RAN: list[str] = []
#: The broker an xdist controller started for its workers, closed when the run ends.
_SHARED_BROKER = pytest.StashKey[ExitStack]()


def _is_xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs `-n 2`) the controller provides the one broker of the
    run before it spawns its workers, which inherit its address as MDMPUSH_TEST_BOOTSTRAP: each
    worker starting (and stopping) the local Kafka on its own would race for one data directory."""
    if not _is_xdist_controller(config):
        return
    stack = ExitStack()
    b = stack.enter_context(provide_broker())
    _BROKER_RAN.append(f"{b.kind} at {b.bootstrap}: {broker_version(b.bootstrap)}")
    os.environ["MDMPUSH_TEST_BOOTSTRAP"] = b.bootstrap
    config.stash[_SHARED_BROKER] = stack


def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_SHARED_BROKER, None)
    if stack is not None:
        stack.close()


def pytest_report_header(config: pytest.Config) -> str:
    """Say up front which Kafka broker the session will test against."""
    return f"kafka broker: {planned_broker()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """And, at the end, which one ran and what version it reported."""
    for line in _BROKER_RAN:
        terminalreporter.write_line(f"kafka broker: {line}")


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """One real broker for the whole session."""
    with provide_broker() as b:
        _BROKER_RAN.append(f"{b.kind} at {b.bootstrap}: {broker_version(b.bootstrap)}")
        yield b


@pytest.fixture
def kafka_settings(broker: Broker) -> Iterator[KafkaSettings]:
    """Settings with a unique topic prefix: tests never see each other's records.

    Every topic under the prefix (the services' internal ones too) is deleted afterwards, so a
    long suite does not pile thousands of partitions (~3 open files each) onto one broker."""
    settings = KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        linger_ms=1,
    )
    yield settings
    admin = AdminClient(settings.admin_config(), logger=client_logger("test"))
    mine = [t for t in admin.list_topics(timeout=10).topics
            if t.startswith(settings.topic_prefix)]
    if mine:
        # Hygiene, not a check: a loaded broker may take longer than this to delete them, and
        # the test's verdict is already given; what is left is said, not raised.
        slow = []
        for topic, future in admin.delete_topics(mine, operation_timeout=30).items():
            try:
                future.exception(60)
            except concurrent.futures.TimeoutError:
                slow.append(topic)
        if slow:
            warnings.warn(f"{len(slow)} topic(s) of this test not deleted within 60 s",
                          stacklevel=1)


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> Topics:
    """The catalogue's topics, created with 2 partitions under this test's prefix."""
    create_topics(kafka_settings, all_topics(), partitions_override=2)
    return Topics(kafka_settings.topic_prefix)


@pytest.fixture
def cli_env(kafka_settings: KafkaSettings, topics: Topics,
            monkeypatch: pytest.MonkeyPatch) -> Topics:
    """`mdmpush` run in-process reads this test's topics."""
    monkeypatch.setenv("MDMPUSH_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("MDMPUSH_KAFKA_TOPIC_PREFIX", kafka_settings.topic_prefix)
    return topics
