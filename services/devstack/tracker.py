"""Follows a deployment's outcomes and alerts from a background thread.

The CLI's `follow` progress, the demo's summary and the pipeline tests' assertions all read the
same view, so "every push accounted for" is checked the way an operator would see it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from services.common.accounting import TERMINAL_STATES, Accounting
from services.common.catalogue import Topics
from services.common.errors import DecodeError
from services.common.kafka.logs import client_logger
from services.common.serde import AvroSerde
from services.common.settings import KafkaSettings


class OutcomeTracker:
    def __init__(self, kafka: KafkaSettings, final_states: frozenset[str] = TERMINAL_STATES
                 ) -> None:
        self.topics = Topics(kafka.topic_prefix)
        self.final_states = final_states
        # Quiet (log_level 0): the demo stops Kafka while the tracker may still be polling.
        self._consumer = Consumer(kafka.consumer_config(
            f"{kafka.topic_prefix}tracker-{time.monotonic_ns()}", **{"log_level": 0}),
            logger=client_logger("devstack-tracker"))
        self._serde = AvroSerde()
        self._lock = threading.Lock()
        self.outcomes: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.undecodable = 0
        self._by_request: dict[str, Accounting] = defaultdict(Accounting)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outcome-tracker", daemon=True)

    def start(self) -> OutcomeTracker:
        parts = []
        for topic in (self.topics.outcomes, self.topics.alerts):
            meta = self._consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, 0) for p in meta.partitions]
        self._consumer.assign(parts)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def __enter__(self) -> OutcomeTracker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(500, 0.1):
                if msg.error():
                    continue
                try:
                    name, record = self._serde.decode(msg.value())
                except DecodeError:
                    self.undecodable += 1
                    continue
                with self._lock:
                    if name == "PushOutcome":
                        self.outcomes.append(record)
                        self._by_request[record["request_id"]].add(record, self.final_states)
                    else:
                        self.alerts.append(record)

    # -- views -------------------------------------------------------------------------------
    def accounting(self, request_id: str) -> Accounting:
        with self._lock:
            acc = self._by_request[request_id]
            return Accounting({k: list(v) for k, v in acc.terminal.items()})

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if predicate(o))

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            return list(self.outcomes), list(self.alerts)

    def wait_terminal(self, request_id: str, targets: int, timeout_s: float) -> bool:
        """True once `targets` distinct targets of the request have a terminal outcome."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.accounting(request_id).terminal) >= targets:
                return True
            time.sleep(0.1)
        return len(self.accounting(request_id).terminal) >= targets
