"""Hypothesis settings for the fuzz targets, and a count of the examples each one ran.

`HYPOTHESIS_PROFILE=ci` (the default) runs 150 derandomized examples per target so CI stays
quick and reproducible; `HYPOTHESIS_PROFILE=proof` runs 5,000 random ones (make proof). No
deadline: a shared 2-core machine makes per-example wall-clock limits flaky, and a real hang is
caught by pytest-timeout instead. The profiles are applied per test (`@FUZZ`), not loaded
globally, so other tests' hypothesis settings stay theirs.
"""

from __future__ import annotations

import os
import tracemalloc
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, settings

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large,
               HealthCheck.function_scoped_fixture, HealthCheck.large_base_example]
settings.register_profile("fuzz-ci", max_examples=150, derandomize=True, deadline=None,
                          database=None, suppress_health_check=_SUPPRESSED)
settings.register_profile("fuzz-proof", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=_SUPPRESSED)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
#: The settings every fuzz target runs with (decorate the test with `@FUZZ`).
FUZZ = settings.get_profile("fuzz-proof" if PROFILE == "proof" else "fuzz-ci")

#: Fuzz target -> examples run in this session.
EXAMPLES: Counter[str] = Counter()


def ran(target: str) -> None:
    """Count one example of fuzz target `target` (called first thing in each example)."""
    EXAMPLES[target] += 1


def peak_allocated(action: Callable[[], object]) -> int:
    """Bytes of Python memory allocated at the peak while `action` runs (it may raise)."""
    tracemalloc.start()
    try:
        action()
    except Exception:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak
