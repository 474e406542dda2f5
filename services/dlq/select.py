"""Which dead letters an operator means (`--reason`, `--since`, `--topic`, ...) and how they group.

Operators first ask "what is on the DLQ and why" (`dlq list`: groups by reason, source topic and
service), then act on one group (`dlq show|replay` with the same filters), so the filters and the
grouping are one pure module used by every subcommand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.common.catalogue import Topics
from services.dlq.records import DeadLetter

_RELATIVE = re.compile(r"^(\d+)\s*(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, now_ms: int) -> int:
    """Epoch ms from `90m` / `2h` / `3d` (that long ago), an ISO 8601 time (UTC when it names no
    zone) or epoch milliseconds; ValueError with what is accepted otherwise."""
    text = text.strip()
    relative = _RELATIVE.match(text)
    if relative:
        return now_ms - int(relative.group(1)) * _UNIT_MS[relative.group(2)]
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration (30s, 90m, 2h, 3d), an ISO 8601 "
                         "time or epoch milliseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Selection:
    """Filters; None matches everything. `reason` is a case-insensitive substring, `topic` a
    source topic with or without the deployment's prefix."""

    reason: str | None = None
    since_ms: int | None = None
    topic: str | None = None
    service: str | None = None
    job_id: str | None = None
    #: PRIORITY or BULK: only push jobs of that lane.
    lane: str | None = None

    def matches(self, dead: DeadLetter, topics: Topics) -> bool:
        if self.since_ms is not None and dead.timestamp_ms < self.since_ms:
            return False
        if self.reason is not None and self.reason.lower() not in dead.reason.lower():
            return False
        if self.topic is not None and dead.source_topic(topics) not in (
                self.topic, f"{topics.prefix}{self.topic}"):
            return False
        if self.service is not None and dead.service != self.service:
            return False
        job = dead.job
        if self.lane is not None and (job is None or job["lane"] != self.lane.upper()):
            return False
        return self.job_id is None or (job is not None and job["job_id"] == self.job_id)


@dataclass
class Group:
    """Dead letters sharing a reason, a source topic and the service that set them aside."""

    reason: str
    source_topic: str
    service: str
    count: int = 0
    #: How many decode as a PushJob (replayable to their lane).
    jobs: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, dead: DeadLetter) -> None:
        self.count += 1
        self.jobs += dead.job is not None
        ts = dead.timestamp_ms
        self.first_ms = ts if self.first_ms is None else min(self.first_ms, ts)
        self.last_ms = ts if self.last_ms is None else max(self.last_ms, ts)


def group(dead_letters: Iterable[DeadLetter], topics: Topics) -> list[Group]:
    """Groups, largest first (then by reason, so the order is stable)."""
    groups: dict[tuple[str, str, str], Group] = {}
    for dead in dead_letters:
        key = (dead.reason, dead.source_topic(topics), dead.service)
        groups.setdefault(key, Group(*key)).add(dead)
    return sorted(groups.values(), key=lambda g: (-g.count, g.reason, g.source_topic))
