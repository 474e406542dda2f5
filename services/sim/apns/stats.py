"""Counters of what the simulator answered, readable by tests and benchmarks from any thread.

Only the simulator's loop thread writes them. Readers take :meth:`SimStats.snapshot`, which
copies each dict with one ``dict()`` call: CPython does that copy without releasing the GIL, so a
reader never sees a dict change size under it, and the hot path needs no lock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimStats", "StatsSnapshot"]


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A copy of the counters at one moment.

    ``by_topic`` / ``by_token`` count accepted (200) pushes; ``by_status`` / ``by_reason`` count
    every answer, faults included. ``resets`` and ``goaways`` count injected connection faults;
    ``refused_streams`` the streams reset with REFUSED_STREAM for exceeding
    MAX_CONCURRENT_STREAMS (never answered, so not in ``requests``).
    """

    requests: int
    accepted: int
    by_status: dict[int, int]
    by_reason: dict[str, int]
    by_topic: dict[str, int]
    by_token: dict[str, int]
    connections_opened: int
    connections_open: int
    resets: int
    goaways: int
    refused_streams: int = 0

    def status(self, code: int) -> int:
        """How many answers had status ``code``."""
        return self.by_status.get(code, 0)


class SimStats:
    """Mutable counters; written on the simulator's loop thread only.

    ``requests`` and ``by_status`` count the answers other than 200 here; :meth:`snapshot` adds
    the 200s (``accepted``).
    """

    __slots__ = (
        "accepted",
        "by_reason",
        "by_status",
        "by_token",
        "by_topic",
        "connections_open",
        "connections_opened",
        "goaways",
        "refused_streams",
        "requests",
        "resets",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.accepted = 0
        self.by_status: dict[int, int] = {}
        self.by_reason: dict[str, int] = {}
        self.by_topic: dict[str, int] = {}
        self.by_token: dict[str, int] = {}
        self.connections_opened = 0
        self.connections_open = 0
        self.resets = 0
        self.goaways = 0
        self.refused_streams = 0

    def answered(self, status: int, reason: str | None) -> None:
        """Count one answer other than a 200 (those are :meth:`accepted_push`)."""
        self.requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if reason is not None:
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

    def accepted_push(self, topic: str, token_hex: str) -> None:
        """Count one 200, per topic and per token (``requests`` and ``by_status`` include it
        only in snapshots: one counter less to bump per push)."""
        self.accepted += 1
        self.by_topic[topic] = self.by_topic.get(topic, 0) + 1
        self.by_token[token_hex] = self.by_token.get(token_hex, 0) + 1

    def snapshot(self) -> StatsSnapshot:
        accepted = self.accepted
        by_status = dict(self.by_status)
        if accepted:
            by_status[200] = by_status.get(200, 0) + accepted
        return StatsSnapshot(
            requests=self.requests + accepted,
            accepted=accepted,
            by_status=by_status,
            by_reason=dict(self.by_reason),
            by_topic=dict(self.by_topic),
            by_token=dict(self.by_token),
            connections_opened=self.connections_opened,
            connections_open=self.connections_open,
            resets=self.resets,
            goaways=self.goaways,
            refused_streams=self.refused_streams,
        )
