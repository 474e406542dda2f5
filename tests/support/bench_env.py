"""What every benchmark script needs first: a real broker and an isolated deployment.

`MDMPUSH_TEST_BOOTSTRAP` names a broker; otherwise the local Kafka 2.3.0 is started (and left
running, as `mdmpush kafka up` would). Each run gets its own topic prefix.
"""

from __future__ import annotations

import os
import uuid

from services.common.settings import KafkaSettings
from services.devstack.kafka import LocalKafka


def bench_kafka(name: str) -> KafkaSettings:
    bootstrap = os.environ.get("MDMPUSH_TEST_BOOTSTRAP") or LocalKafka().up().bootstrap
    return KafkaSettings(bootstrap_servers=bootstrap,
                         topic_prefix=f"bench-{name}-{uuid.uuid4().hex[:8]}.")
