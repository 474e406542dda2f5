"""Which outcome ends a (request, target): the accounting guarantee of docs/CONTRACTS.md.

Every (request, target) must end in exactly one terminal state. Only first pushes count
(`repush == 0`): a correlator re-push's own outcomes are evidence, not a second verdict.
A SKIPPED outcome with reason "coalesced" is not terminal: the request rides on another job's
push, and the correlator writes its verdict when that job's verdict is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: States that can end a (request, target); `is_terminal` has the one exception.
TERMINAL_STATES = frozenset({"SKIPPED", "FAILED", "DEAD_LETTERED", "ANSWERED", "UNANSWERED"})
#: The SKIPPED reason of a request coalesced onto an outstanding push (not terminal).
COALESCED = "coalesced"


def is_terminal(outcome: Mapping[str, Any],
                final_states: frozenset[str] = TERMINAL_STATES) -> bool:
    """Whether this outcome ends its (request, target): a final state of a first push, except
    a coalesced SKIPPED, which waits for its carrier's verdict."""
    state = outcome["state"]
    if state not in final_states or outcome.get("repush", 0) != 0:
        return False
    return not (state == "SKIPPED" and outcome.get("reason") == COALESCED)


@dataclass
class Accounting:
    """Terminal outcomes of one request, by target."""

    terminal: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, outcome: dict[str, Any], final_states: frozenset[str] = TERMINAL_STATES) -> None:
        if is_terminal(outcome, final_states):
            self.terminal.setdefault(outcome["enrollment_id"], []).append(outcome)

    def state_of(self, enrollment_id: str) -> str | None:
        outcomes = self.terminal.get(enrollment_id)
        return outcomes[0]["state"] if outcomes else None

    def missing(self, targets: Iterable[str]) -> list[str]:
        return [t for t in targets if t not in self.terminal]

    def doubled(self) -> dict[str, list[str]]:
        """Targets whose job has more than one terminal record, with their states.

        Every record counts, the same verdict written twice included: a duplicate is exactly
        what the exactly-once guarantee forbids, so it must not be folded away.
        """
        return {target: [o["state"] for o in outcomes]
                for target, outcomes in self.terminal.items() if len(outcomes) > 1}
