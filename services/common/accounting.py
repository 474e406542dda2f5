"""Which outcome ends a (request, target): the accounting guarantee of docs/CONTRACTS.md.

Every (request, target) must end in exactly one terminal state. Only first pushes count
(`repush == 0`): a correlator re-push's own outcomes are evidence, not a second verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATES = frozenset({"SKIPPED", "FAILED", "DEAD_LETTERED", "ANSWERED", "UNANSWERED"})


@dataclass
class Accounting:
    """Terminal outcomes of one request, by target."""

    terminal: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, outcome: dict[str, Any], final_states: frozenset[str] = TERMINAL_STATES) -> None:
        if outcome["state"] in final_states and outcome.get("repush", 0) == 0:
            self.terminal.setdefault(outcome["enrollment_id"], []).append(outcome)

    def state_of(self, enrollment_id: str) -> str | None:
        outcomes = self.terminal.get(enrollment_id)
        return outcomes[0]["state"] if outcomes else None

    def missing(self, targets: Iterable[str]) -> list[str]:
        return [t for t in targets if t not in self.terminal]

    def doubled(self) -> dict[str, list[str]]:
        """Targets with more than one terminal verdict (by distinct job id and state)."""
        out = {}
        for target, outcomes in self.terminal.items():
            verdicts = {(o["job_id"], o["state"]) for o in outcomes}
            if len(verdicts) > 1:
                out[target] = sorted(state for _, state in verdicts)
        return out
