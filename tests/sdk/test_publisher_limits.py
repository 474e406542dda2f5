"""The SDK refuses what the pipeline would refuse, before publishing anything.

Each invalid request raises InvalidRequest naming the field (checked case by case without a
broker), and, published through a real PushPublisher / PolicyPublisher on the real broker, every
one of them leaves the topic empty: the valid control published after them is the only record.
The limits are the gateway's and the fan-out's own (services/common/limits.py), read from there.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.common import limits
from services.common.catalogue import Topics
from services.common.kafka.reader import read_to_end
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings
from services.sdk.policy import PolicyPublisher, PushPolicy
from services.sdk.publisher import InvalidRequest, PushPublisher, PushRequest

UDID = "00008030-001A2B3C4D5E6F70"
TOPIC = "com.apple.mgmt.External.1c2f5b6e-0000-4000-8000-000000000001"
MAX = limits.MAX_TARGETS_PER_REQUEST

#: case -> (PushRequest keyword arguments, the field InvalidRequest must name)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "no targets": ({"tenant": "acme"}, "enrollment_ids"),
    "empty tenant": ({"tenant": "", "enrollment_ids": [UDID]}, "tenant"),
    "tenant with a space": ({"tenant": "ac me", "enrollment_ids": [UDID]}, "tenant"),
    "tenant too long": ({"tenant": "t" * (limits.MAX_TENANT_LEN + 1), "enrollment_ids": [UDID]},
                        "tenant"),
    "empty enrollment id": ({"tenant": "acme", "enrollment_ids": [UDID, ""]},
                            "enrollment_ids[]"),
    "enrollment id too long (a 400 KB UDID)": (
        {"tenant": "acme", "enrollment_ids": ["A" * 400_000]}, "enrollment_ids[]"),
    "enrollment id one over the limit": (
        {"tenant": "acme", "enrollment_ids": ["A" * (limits.MAX_ENROLLMENT_ID_LEN + 1)]},
        "enrollment_ids[]"),
    "enrollment id with a comma": ({"tenant": "acme", "enrollment_ids": [f"{UDID},x"]},
                                   "enrollment_ids[]"),
    "enrollment id with a slash": ({"tenant": "acme", "enrollment_ids": ["../x"]},
                                   "enrollment_ids[]"),
    "ids as one string": ({"tenant": "acme", "enrollment_ids": UDID}, "enrollment_ids"),
    "one target too many": ({"tenant": "acme",
                             "enrollment_ids": [f"U{i}" for i in range(MAX + 1)]},
                            "enrollment_ids"),
    "ids over a record's worth of bytes": (
        {"tenant": "acme", "enrollment_ids": ["A" * 100 + str(i)
                                              for i in range(limits.MAX_TARGETS_BYTES // 100)]},
        "enrollment_ids"),
    "command type with spaces": ({"tenant": "acme", "enrollment_ids": [UDID],
                                  "command_type": "wipe all"}, "command_type"),
    "APS without payload": ({"tenant": "acme", "enrollment_ids": [UDID], "kind": "aps"},
                            "aps_payload"),
    "APS payload over 4 KB": ({"tenant": "acme", "enrollment_ids": [UDID], "kind": "aps",
                               "aps_payload": '{"aps":{"alert":"' + "x" * 5000 + '"}}'},
                              "aps_payload"),
    "APS payload nested too deep": ({"tenant": "acme", "enrollment_ids": [UDID], "kind": "aps",
                                     "aps_payload": "[" * 40 + "]" * 40}, "body"),
    "request id too long": ({"tenant": "acme", "enrollment_ids": [UDID],
                             "request_id": "r" * 1000}, "request_id"),
}


def published(kafka: KafkaSettings, topic: str) -> list[dict[str, Any]]:
    serde = AvroSerde()
    return [serde.decode(m.value())[1] if m.value() else {"tombstone": (m.key() or b"").decode()}
            for m in read_to_end(kafka, topic, timeout_s=30)]


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_request_names_its_field(case: str) -> None:
    kwargs, field = INVALID[case]
    with pytest.raises(InvalidRequest) as refused:
        PushRequest(**kwargs).to_record()
    assert refused.value.field == field
    assert field in str(refused.value) and refused.value.reason
    assert isinstance(refused.value, ValueError)  # callers that caught ValueError still do


@pytest.mark.kafka
def test_invalid_requests_never_reach_kafka(kafka_settings: KafkaSettings,
                                            topics: Topics) -> None:
    publisher = PushPublisher(kafka_settings)
    for kwargs, field in INVALID.values():
        with pytest.raises(InvalidRequest, match=field.replace("[]", r"\[\]")):
            publisher.publish(PushRequest(**kwargs))
    control = publisher.publish(PushRequest(tenant="acme", enrollment_ids=[UDID]))
    assert [r["request_id"] for r in published(kafka_settings, topics.requests)] == [control]


@pytest.mark.kafka
def test_the_largest_valid_request_is_published(kafka_settings: KafkaSettings,
                                                topics: Topics) -> None:
    """At the limits: MAX targets filling the byte budget, then the longest allowed id."""
    width = (limits.MAX_TARGETS_BYTES - limits.MAX_ENROLLMENT_ID_LEN) // (MAX - 1)
    ids = [f"{i:08d}".ljust(width, "A") for i in range(MAX - 1)]
    ids.append("L" * limits.MAX_ENROLLMENT_ID_LEN)
    assert sum(map(len, ids)) <= limits.MAX_TARGETS_BYTES
    request_id = PushPublisher(kafka_settings).publish(PushRequest(tenant="acme",
                                                                   enrollment_ids=ids))
    (record,) = published(kafka_settings, topics.requests)
    assert record["request_id"] == request_id and record["enrollment_ids"] == ids


BAD_CERTIFICATES = ["", "not a topic", "com..apple", "x" * 300, "com.apple.mgmt/../x"]


@pytest.mark.kafka
def test_policy_for_an_invalid_certificate_refused(kafka_settings: KafkaSettings,
                                                   topics: Topics) -> None:
    publisher = PolicyPublisher(kafka_settings)
    for certificate in BAD_CERTIFICATES:
        with pytest.raises(InvalidRequest, match="certificate"):
            publisher.set(PushPolicy(certificate=certificate, bulk_per_minute=5.0))
        with pytest.raises(InvalidRequest, match="certificate"):
            publisher.clear(certificate)
    publisher.set(PushPolicy(certificate=TOPIC, bulk_per_minute=5.0))
    publisher.clear("*")
    # Two keys, two partitions of the config topic: read back in either order.
    assert sorted(str(r.get("certificate") or r.get("tombstone"))
                  for r in published(kafka_settings, topics.config)) == sorted([TOPIC, "*"])
