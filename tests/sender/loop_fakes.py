"""What the broker-free tests of the sender's loop run on: the in-memory Kafka I/O, an APNs pool
that answers when the test says so, stepped clocks and a dict of policies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.kafka.dead_letter import DeadLetterWriter, DlqLimit
from services.common.kafka.io import Partition
from services.common.kafka.memory import MemoryBroker, MemoryKafkaIO, MemoryRecord
from services.common.policy import PushPolicy
from services.common.serde import AvroSerde
from services.sender.already_sent import SOURCE_HEADER, Taken, parse_source
from services.sender.apns.pool import UnknownCertificateError
from services.sender.apns.types import ApnsRequest, ApnsResponse, TransportError
from services.sender.job import Lane
from services.sender.policy import PolicyBook
from services.sender.scheduler import NOT_BEFORE_HEADER
from services.sender.service import Sender
from services.sender.settings import SenderSettings

SERDE = AvroSerde()
TOPICS = Topics("")
CERT = "com.apple.mgmt.External.aaaa"
OTHER = "com.apple.mgmt.External.bbbb"
DELAYS_MS = (200, 500)
RETRY_200, RETRY_500 = TOPICS.retry(200), TOPICS.retry(500)


class SteppedClock:
    """Monotonic seconds and epoch ms that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def epoch_ms(self) -> int:
        return 1_700_000_000_000 + int(self.now * 1000)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakePool:
    """An APNs pool that keeps every request in flight until the test answers it."""

    def __init__(self, certificates: tuple[str, ...] = (CERT, OTHER)) -> None:
        self.certificates = set(certificates)
        self.requests: list[tuple[ApnsRequest, Lane]] = []
        self._waiting: dict[str, tuple[ApnsRequest, Lane]] = {}
        self._answers: list[ApnsResponse] = []
        #: Submitted since the last poll: not written yet (as libcurl's fresh handles).
        self._fresh: list[str] = []
        #: How long each poll was allowed to wait for answers.
        self.waits: list[float] = []

    def submit(self, request: ApnsRequest, base_url: str | None = None, *,
               lane: Lane = Lane.BULK) -> None:
        if request.topic not in self.certificates:
            raise UnknownCertificateError(request.topic)
        self.requests.append((request, lane))
        self._waiting[request.correlation_id] = (request, lane)
        self._fresh.append(request.correlation_id)

    def poll(self, timeout_s: float) -> list[ApnsResponse]:
        self.waits.append(timeout_s)
        self._fresh.clear()
        answers, self._answers = self._answers, []
        return answers

    def unsend(self) -> list[ApnsRequest]:
        taken = [self._waiting.pop(cid)[0] for cid in self._fresh if cid in self._waiting]
        self._fresh.clear()
        taken_ids = {r.correlation_id for r in taken}
        self.requests = [(r, ln) for r, ln in self.requests if r.correlation_id not in taken_ids]
        return taken

    def in_flight_for(self, topic: str, lane: Lane = Lane.BULK, base_url: str | None = None) -> int:
        return sum(1 for r, ln in self._waiting.values() if r.topic == topic and ln == lane)

    def close(self) -> list[ApnsResponse]:
        aborted = [_response(r, None, error_kind=TransportError.CLOSED)
                   for r, _ in self._waiting.values()]
        self._waiting.clear()
        return aborted

    @property
    def waiting(self) -> list[ApnsRequest]:
        return [r for r, _ in self._waiting.values()]

    def answer(self, status: int | None = 200, *, reason: str | None = None,
               count: int | None = None, topic: str | None = None,
               error_kind: TransportError | None = None) -> int:
        """Answer the oldest `count` (default: all) requests in flight (of `topic`, if given)."""
        chosen = [r for r, _ in self._waiting.values() if topic is None or r.topic == topic]
        for request in chosen[:count]:
            del self._waiting[request.correlation_id]
            self._answers.append(_response(request, status, reason=reason, error_kind=error_kind))
        return len(chosen[:count])


def _response(request: ApnsRequest, status: int | None, *, reason: str | None = None,
              error_kind: TransportError | None = None) -> ApnsResponse:
    return ApnsResponse(request.correlation_id, request.apns_id, status, reason, latency_ms=1.0,
                        error_kind=error_kind if status is None else None)


class StaticPolicies:
    """The policy view from a dict (what CompactedView gives the sender, without Kafka)."""

    def __init__(self, policies: dict[str, PushPolicy] | None = None) -> None:
        self.policies = dict(policies or {})

    def load(self, timeout_s: float = 30.0) -> None:
        pass

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0

    def get(self, key: str) -> PushPolicy | None:
        return self.policies.get(key) or self.policies.get("*")

    def close(self) -> None:
        pass


class MemoryAlreadySent:
    """`AlreadySent` on the in-memory outcomes topic (every record: memory records carry no
    timestamp, so `since_ms` is not applied; the real reader's time bound is tested on Kafka)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.reads: list[Taken] = []

    def read(self, taken: Taken) -> dict[Partition, set[int]]:
        self.reads.append(dict(taken))
        found: dict[Partition, set[int]] = {}
        for record in self.broker.records(TOPICS.outcomes):
            for key, value in record.headers() or ():
                parsed = parse_source(value) if key == SOURCE_HEADER and isinstance(
                    value, bytes) else None
                if parsed is not None and parsed[0] in taken and parsed[1] >= taken[
                        parsed[0]][0]:
                    found.setdefault(parsed[0], set()).add(parsed[1])
        return found


@dataclass
class Loop:
    """A sender on in-memory Kafka and a fake pool, stepped by the test."""

    sender: Sender
    io: MemoryKafkaIO
    broker: MemoryBroker
    pool: FakePool
    clock: SteppedClock
    policies: StaticPolicies

    def produce(self, topic: str, *jobs: dict[str, Any], partition: int = 0,
                headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        for record in jobs:
            self.broker.append(topic, SERDE.encode("PushJob", record), key=record["topic"],
                               headers=headers, partition=partition)

    def step(self, times: int = 1, advance_s: float = 0.0) -> None:
        for _ in range(times):
            self.clock.advance(advance_s)
            self.sender.step()

    def outcomes(self) -> list[dict[str, Any]]:
        return [SERDE.decode_as(r.value(), "PushOutcome")
                for r in self.broker.records(TOPICS.outcomes)]

    def states(self) -> Counter[str]:
        return Counter(o["state"] for o in self.outcomes())

    def dlq(self) -> list[MemoryRecord]:
        return self.broker.records(TOPICS.dlq)

    def committed(self, topic: str, partition: int = 0) -> int:
        return self.broker.committed(self.io.group, (topic, partition)).offset


def job(n: int, *, topic: str = CERT, lane: str = "BULK", attempt: int = 0) -> dict[str, Any]:
    return {
        "job_id": f"req/E{n}", "request_id": "req", "tenant": "acme", "enrollment_id": f"E{n}",
        "lane": lane, "kind": "MDM", "topic": topic, "token_hex": f"{n:064x}",
        "push_magic": f"magic-{n}", "aps_payload": None, "expiration": None,
        "command_type": "apply_policies", "token_updated_at": 1, "created_at": 1,
        "attempt": attempt, "repush": 0, "last_error": None,
    }


def not_before(epoch_ms: int) -> list[tuple[str, str | bytes | None]]:
    return [(NOT_BEFORE_HEADER, str(epoch_ms).encode())]


def make_loop(*, policies: dict[str, PushPolicy] | None = None, partitions: int = 1,
              start: bool = True, dlq_limit: DlqLimit | None = None,
              broker: MemoryBroker | None = None, already_sent: bool = False,
              stall_fence_s: float | None = None,
              outstanding: Callable[[], int | None] | None = None, **settings: Any) -> Loop:
    """A sender subscribed to the jobs and retry topics (`partitions` each) of an empty broker
    (or of `broker`, shared with an earlier loop: a successor in the same group)."""
    broker = broker or MemoryBroker()
    for topic in (TOPICS.jobs_priority, TOPICS.jobs_bulk, RETRY_200, RETRY_500):
        broker.create_topic(topic, partitions)
    for topic in (TOPICS.outcomes, TOPICS.dlq):
        broker.create_topic(topic, 1)
    io = MemoryKafkaIO(broker, "senders")
    pool = FakePool()
    clock = SteppedClock()
    view = StaticPolicies(policies)
    values: dict[str, Any] = {"retry_delays_ms": DELAYS_MS, "metrics_port": 0,
                              "shutdown_timeout_s": 0.0, "instance_id": "unit"}
    values.update(settings)
    sender = Sender(
        SenderSettings(**values), io, pool, topics=TOPICS, serde=SERDE,
        policies=PolicyBook(PushPolicy(max_attempts=values.get("default_max_attempts", 5)),
                            view),
        dead_letters=DeadLetterWriter(io, TOPICS.dlq, service="sender",
                                      limit=dlq_limit or DlqLimit(0.5, 100)),
        clock=Clock(), monotonic=clock.monotonic, epoch_ms=clock.epoch_ms,
        already_sent=MemoryAlreadySent(broker) if already_sent else None,
        stall_fence_s=stall_fence_s,
        outstanding=outstanding,
    )
    loop = Loop(sender, io, broker, pool, clock, view)
    if start:
        sender.start()
    return loop
