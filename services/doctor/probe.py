"""Is Kafka there, with the topics the doctor reads? One short metadata request decides.

The person running the doctor is often on a laptop with a customer's archive and no Kafka in
reach. Without this probe every read would wait its 30 s timeout while librdkafka logs each
refused connection; with it, the doctor knows within a fraction of a second (a refused or
unresolvable broker) or `timeout_s` (a broker that never answers) and says so in one sentence,
with librdkafka's own reason. The probe's client logs through the common `client_logger`, raised
to CRITICAL unless debug logging is on: its failure is reported once, in that sentence, not also
as a log line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings

#: Default wait for the broker's metadata.
PROBE_TIMEOUT_S = 3.0

#: One metadata request at a time: the client's connection errors are only delivered between
#: requests, so a refused connection is noticed after one step, not after the whole timeout.
PROBE_STEP_S = 0.25

#: librdkafka's "host:port/bootstrap: " prefix and " (after 0ms in state CONNECT)" suffix.
_BROKER_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")

class _ClientErrors:
    """The connection errors librdkafka reports through `error_cb` during the probe."""

    def __init__(self) -> None:
        self.all_brokers_down = False
        self.last: str | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.all_brokers_down = True
        else:
            self.last = _STATE_SUFFIX.sub("", _BROKER_PREFIX.sub("", err.str()))


def probe(settings: KafkaSettings, topics: Iterable[str], timeout_s: float = PROBE_TIMEOUT_S
          ) -> str | None:
    """None if the broker answers within `timeout_s` and has every one of `topics`; else why
    not, as one clause.

    Asks for the metadata of every topic rather than of `topics` alone, so that a broker with
    automatic topic creation does not create them for the doctor."""
    client_log = client_logger("doctor-probe")
    client_log.setLevel(logging.NOTSET if logging.getLogger().isEnabledFor(logging.DEBUG)
                        else logging.CRITICAL)
    errors = _ClientErrors()
    client = Producer(settings.common_config(), logger=client_log, error_cb=errors)
    servers = settings.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                cause = f" (last error: {errors.last})" if errors.last else ""
                return f"Kafka at {servers} did not answer within {timeout_s:g} s{cause}"
            try:
                known = client.list_topics(timeout=min(PROBE_STEP_S, left)).topics
            except KafkaException:
                client.poll(0)  # delivers the connection errors to `errors`
                if errors.all_brokers_down:
                    cause = errors.last or "all brokers down"
                    return f"Kafka at {servers} is unreachable ({cause})"
                continue
            missing = [t for t in topics if t not in known]
            if missing:
                return (f"topic {missing[0]} does not exist on {servers} "
                        "(is MDMPUSH_KAFKA_TOPIC_PREFIX right?)")
            return None
    finally:
        client.flush(0)  # nothing was produced; serves the last callbacks before the client goes
