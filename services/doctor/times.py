"""Epoch milliseconds (how every record carries time) as the UTC ISO 8601 people and Apple read."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ms: int | None) -> str | None:
    """2026-11-18T10:13:20.000Z, or None for an unknown time."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
