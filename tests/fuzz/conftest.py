"""Prints the examples each fuzz target ran (and writes them as JSON to MDMPUSH_FUZZ_REPORT)."""

from __future__ import annotations

import json
import os

import pytest

from tests.fuzz.fuzzing import EXAMPLES, PROFILE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not EXAMPLES:
        return
    terminalreporter.section(f"fuzz examples run (HYPOTHESIS_PROFILE={PROFILE})")
    for target, count in sorted(EXAMPLES.items()):
        terminalreporter.write_line(f"{target:<56} {count:>7}")
    report = os.environ.get("MDMPUSH_FUZZ_REPORT")
    if report:
        with open(report, "w", encoding="utf-8") as fh:
            json.dump({"profile": PROFILE, "examples": dict(EXAMPLES)}, fh, indent=1)
