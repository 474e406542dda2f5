"""Follow one request until every target is accounted for: `track(request_id)` yields progress.

    since = int(time.time() * 1000)
    request_id = PushPublisher().publish(PushRequest(tenant="acme", target_all=True))
    for progress in track(request_id, since_ms=since):
        print(progress.terminal, "/", progress.targets, progress.by_state)
    # the last one: progress.complete, progress.reasons (diagnoses of UNANSWERED, skip and
    # failure reasons)

Bounded: the request record is looked up on the requests topic from `since_ms` (the push API's
answer gives the request's time; default: the last 24 hours), and the outcomes
topic is then read from the request record's own Kafka timestamp minus a margin (clock skew
between the publisher's and the services' hosts) — never from the beginning.

Which targets, and when complete: a request with explicit enrollment ids has exactly those
targets (the fan-out answers every one, with a job or a SKIPPED outcome). A `target_all` request
targets the tenant's enrollments the fan-out knew at expansion; outside the fan-out the best
account of that is the published registry (`mdm.device.registry.v1`): every enrollment of the
tenant enrolled by the request's time, plus any target an outcome of the request names. Complete
means every target has a terminal outcome, decided by services.common.accounting (first pushes
only, exactly one terminal state per target), which the correlator's ANSWERED/UNANSWERED
verdicts (diagnosis in `reason`) close for pushes APNs accepted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from services.common.accounting import Accounting, is_terminal
from services.common.catalogue import Topics
from services.common.errors import DecodeError, MdmPushError
from services.common.kafka.reader import assign_from_time, read_to_end, reader_consumer
from services.common.registry_view import DeviceRecord, load_registry
from services.common.serde import AvroSerde, serde_for
from services.common.settings import KafkaSettings

#: Outcomes are read from the request's time minus this (clocks of different hosts differ).
MARGIN_MS = 60_000
#: Where the request is looked for when the caller does not say when it was made.
LOOKBACK_MS = 24 * 3600 * 1000
#: The state of a target with no outcome yet (queued, throttled, not expanded yet).
PENDING = "PENDING"
#: The state of a target whose request rides on another push (a coalesced SKIPPED, not
#: terminal): the correlator closes it with that carrier push's verdict.
COALESCED = "COALESCED"


class RequestNotFoundError(MdmPushError):
    """The request is not on the requests topic in the time searched."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One request's state: targets by state, and the reasons of the terminal ones."""

    request_id: str
    targets: int
    #: State -> targets in it now: PENDING, SENT, RETRYING, COALESCED, then the terminal states.
    by_state: dict[str, int]
    #: Terminal state -> reason (diagnosis, skip reason, APNs reason) -> targets.
    reasons: dict[str, dict[str, int]]
    complete: bool
    #: Targets with their terminal outcome (services.common.accounting's rule).
    terminal: int


class RequestView:
    """The pure fold of one request's outcomes into its progress."""

    def __init__(self, request_id: str, targets: Iterable[str]) -> None:
        self.request_id = request_id
        self.targets = set(targets)
        self.accounting = Accounting()
        #: The latest non-terminal state of each target (first pushes only, like accounting).
        self.latest: dict[str, str] = {}

    def add(self, outcome: Mapping[str, Any]) -> None:
        if outcome["request_id"] != self.request_id or outcome.get("repush", 0) != 0:
            return
        target = outcome["enrollment_id"]
        self.targets.add(target)
        self.accounting.add(dict(outcome))
        if not is_terminal(outcome):
            state = outcome["state"]
            # The only SKIPPED that is not terminal: one riding on another job's push.
            self.latest[target] = COALESCED if state == "SKIPPED" else state

    def progress(self) -> Progress:
        by_state: Counter[str] = Counter()
        reasons: dict[str, Counter[str]] = {}
        terminal = 0
        for target in self.targets:
            final = self.accounting.terminal.get(target)
            if final:
                terminal += 1
                state = final[0]["state"]
                reasons.setdefault(state, Counter())[final[0].get("reason") or "-"] += 1
            else:
                state = self.latest.get(target, PENDING)
            by_state[state] += 1
        return Progress(self.request_id, len(self.targets), dict(by_state),
                        {s: dict(c) for s, c in reasons.items()},
                        complete=not self.accounting.missing(self.targets), terminal=terminal)


def expected_targets(request: Mapping[str, Any], registry: Mapping[str, DeviceRecord]
                     ) -> set[str]:
    """The request's targets as known before any outcome (see the module's docstring)."""
    if not request["target_all"]:
        return set(request["enrollment_ids"])
    made = request["requested_at"] + MARGIN_MS
    return {eid for eid, record in registry.items()
            if record["tenant"] == request["tenant"] and (record["enrolled_at"] or 0) <= made}


def find_request(kafka: KafkaSettings, request_id: str, since_ms: int, *,
                 serde: AvroSerde | None = None, timeout_s: float = 60.0
                 ) -> tuple[dict[str, Any], int]:
    """The NotificationRequest and its record's Kafka timestamp, searched from `since_ms` on."""
    serde = serde or serde_for(kafka)
    topic = Topics(kafka.topic_prefix).requests
    for msg in read_to_end(kafka, topic, since_ms=since_ms, timeout_s=timeout_s, name="track"):
        try:
            request = serde.decode_as(msg.value(), "NotificationRequest")
        except DecodeError:
            continue
        if request["request_id"] == request_id:
            return request, msg.timestamp()[1]
    raise RequestNotFoundError(f"request {request_id} is not on {topic} since "
                               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(since_ms/1000))}"
                               " UTC (give the request's time with --since)")


def track(
    request_id: str,
    *,
    settings: KafkaSettings | None = None,
    since_ms: int | None = None,
    interval_s: float = 1.0,
    timeout_s: float | None = None,
    serde: AvroSerde | None = None,
) -> Iterator[Progress]:
    """Yield the request's progress whenever it changes, until every target is in a terminal
    state (the last one has `complete`), or until `timeout_s` (the last one has not).

    `since_ms`: a time at or before the request (the push API answers with its requested_at);
    the request is looked for from there on (default: in the last 24 hours).
    RequestNotFoundError if it is not on the requests topic since then."""
    kafka = settings or KafkaSettings()
    serde = serde or serde_for(kafka)
    started = time.monotonic()
    search_from = (since_ms if since_ms is not None
                   else int(time.time() * 1000) - LOOKBACK_MS) - MARGIN_MS
    request, made_ms = find_request(kafka, request_id, search_from, serde=serde)
    registry = load_registry(kafka) if request["target_all"] else {}
    view = RequestView(request_id, expected_targets(request, registry))
    consumer = reader_consumer(kafka, "track")
    try:
        assign_from_time(consumer, Topics(kafka.topic_prefix).outcomes, made_ms - MARGIN_MS,
                         timeout_s=30.0)
        # Explicit targets are exact: outcomes keyed by other enrollments are not decoded.
        keys = None if request["target_all"] else {t.encode() for t in view.targets}
        last: Progress | None = None
        due = time.monotonic()
        while True:
            wait = max(0.0, due - time.monotonic())
            for msg in consumer.consume(1000, wait):
                if msg.error() is not None or (keys is not None and msg.key() not in keys):
                    continue
                try:
                    view.add(serde.decode_as(msg.value(), "PushOutcome"))
                except DecodeError:
                    continue  # a poison outcome is the correlator's to dead-letter, not ours
            now = time.monotonic()
            if now < due:
                continue  # a busy topic: fold on, count once per interval
            due = now + interval_s
            progress = view.progress()
            if progress != last:
                yield progress
                last = progress
            if progress.complete:
                return
            if timeout_s is not None and now - started > timeout_s:
                return
    finally:
        consumer.close()
