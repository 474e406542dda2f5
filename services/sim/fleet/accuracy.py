"""Score the pipeline's verdicts against the fleet's ground truth: the confusion matrix.

A verdict per enrollment is read the way an operator would read it: ANSWERED (with the
correlator's `reason` naming the re-push that helped, e.g. `enrollment_race`), UNANSWERED with
the alert's diagnosis, FAILED for a wrong topic, SKIPPED for a device that checked out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.accounting import Accounting
from services.sim.fleet.truth import ANSWERED

#: Causes a correlator re-push repairs: the device answers it, and the verdict names the cause.
_REPAIRED = frozenset({"enrollment_race", "stale_token"})
_FAILED_TOPIC_REASONS = frozenset({"WrongTopic", "DeviceTokenNotForTopic", "BadTopic"})


def verdict_of(outcome: Mapping[str, Any]) -> str:
    """One terminal outcome as a diagnosis name (lower case, as docs/ARCHITECTURE.md "Diagnoses"
    writes it)."""
    state, reason = outcome["state"], outcome.get("reason")
    if state == "ANSWERED":
        return reason if reason in _REPAIRED else ANSWERED
    if state == "UNANSWERED":
        return str(reason or "unknown").lower()
    if state == "FAILED" and reason in _FAILED_TOPIC_REASONS:
        return "wrong_topic"
    if state == "SKIPPED" and reason == "checked_out":
        return "unenrolled"
    return f"{state.lower()}:{reason}"


def verdicts(accounting: Accounting) -> dict[str, str]:
    """Enrollment id -> verdict name, from each target's first terminal outcome."""
    return {target: verdict_of(outcomes[0]) for target, outcomes in accounting.terminal.items()}


@dataclass
class Confusion:
    """Counts of (expected, got) pairs, and the derived accuracy figures."""

    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, expected: Mapping[str, str], got: Mapping[str, str]) -> Confusion:
        return cls(Counter((want, got.get(target, "missing")) for target, want in
                           expected.items()))

    def accuracy(self, classes: Iterable[str] | None = None) -> float:
        """Share of correct verdicts, over the given expected classes (all by default)."""
        wanted = set(classes) if classes is not None else None
        total = correct = 0
        for (want, got), n in self.pairs.items():
            if wanted is None or want in wanted:
                total += n
                correct += n if want == got else 0
        return correct / total if total else 1.0

    def render(self) -> str:
        """A fixed-width matrix, expected classes as rows."""
        rows = sorted({w for w, _ in self.pairs})
        cols = sorted({g for _, g in self.pairs})
        width = max(len(c) for c in [*rows, *cols, "expected \\ got"]) + 2
        lines = ["expected \\ got".ljust(width) + "".join(c.rjust(width) for c in cols)]
        for r in rows:
            lines.append(r.ljust(width) + "".join(
                str(self.pairs.get((r, c), 0) or ".").rjust(width) for c in cols))
        return "\n".join(lines)
