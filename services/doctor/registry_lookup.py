"""The registry for `doctor sysdiagnose`, or one sentence saying why it could not be read.

The person running the doctor often has a customer's archive on a laptop with no Kafka in
reach. The device's own values are worth showing anyway, so an unreachable broker is not an
error here: a short metadata probe comes first, and if it fails the comparison is skipped with
the reason (librdkafka's own, e.g. "Connection refused") instead of waiting out the registry
read's 30 s timeout. The probe's client logs to a logger of its own that stays silent unless
debug logging is on: its failure is reported once, in that sentence, not in hundreds of
librdkafka lines.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer

from services.common.catalogue import Topics
from services.common.errors import TopicReadError
from services.common.registry_view import DeviceRecord, load_registry
from services.common.settings import KafkaSettings

#: Default wait for the broker's metadata before the comparison is skipped.
PROBE_TIMEOUT_S = 3.0

#: One metadata request at a time: the client's connection errors are only delivered between
#: requests, so a refused connection is noticed after one step, not after the whole timeout.
PROBE_STEP_S = 0.25

#: librdkafka's "host:port/bootstrap: " prefix and " (after 0ms in state CONNECT)" suffix.
_BROKER_PREFIX = re.compile(r"^\S+/(?:bootstrap|\d+): ")
_STATE_SUFFIX = re.compile(r" \(after \d+ms in state \w+\)$")

CLIENT_LOG = logging.getLogger("services.doctor.registry_lookup.librdkafka")


@dataclass(frozen=True, slots=True)
class RegistryLookup:
    """Either the registry (enrollment id -> record) or why it could not be read."""

    registry: dict[str, DeviceRecord] | None
    skipped_because: str | None = None


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


def probe(settings: KafkaSettings, topic: str, timeout_s: float) -> str | None:
    """None if the broker answers within `timeout_s` and has `topic`; else why not.

    Asks for the metadata of every topic rather than of `topic` alone, so that a broker with
    automatic topic creation does not create the registry topic for the doctor."""
    CLIENT_LOG.setLevel(logging.NOTSET if logging.getLogger().isEnabledFor(logging.DEBUG)
                        else logging.CRITICAL)
    errors = _ClientErrors()
    client = Producer(settings.common_config(), logger=CLIENT_LOG, error_cb=errors)
    servers = settings.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                cause = f" (last error: {errors.last})" if errors.last else ""
                return f"Kafka at {servers} did not answer within {timeout_s:g} s{cause}"
            try:
                topics = client.list_topics(timeout=min(PROBE_STEP_S, left)).topics
            except KafkaException:
                client.poll(0)  # delivers the connection errors to `errors`
                if errors.all_brokers_down:
                    cause = errors.last or "all brokers down"
                    return f"Kafka at {servers} is unreachable ({cause})"
                continue
            if topic not in topics:
                return (f"the registry topic {topic} does not exist on {servers} "
                        "(is MDMPUSH_KAFKA_TOPIC_PREFIX right?)")
            return None
    finally:
        client.flush(0)  # nothing was produced; serves the last callbacks before the client goes


def lookup_registry(settings: KafkaSettings, probe_timeout_s: float = PROBE_TIMEOUT_S
                    ) -> RegistryLookup:
    """The whole registry (other enrollments of the same UDID are the evidence of a stale
    PushMagic), or the reason the comparison has to be skipped."""
    why = probe(settings, Topics(settings.topic_prefix).registry, probe_timeout_s)
    if why is not None:
        return RegistryLookup(None, why)
    try:
        return RegistryLookup(load_registry(settings))
    except TopicReadError as exc:
        return RegistryLookup(None, str(exc))
