"""The arithmetic behind the fleet, soak and memory figures (pure: no broker, no process).

The benchmarks themselves need minutes and a broker; what they conclude from their samples is
checked here, so a figure cannot be MET by a counting mistake.
"""

from __future__ import annotations

from tests.bench.bench_fleet import drain
from tests.bench.bench_soak import Soak, lives, slope_mib_per_min
from tests.support.bench_stack import Sample, Verdicts


def outcome(request: str, target: str, state: str, **extra: object) -> dict[str, object]:
    return {"request_id": request, "enrollment_id": target, "state": state, "repush": 0,
            "reason": None, **extra}


def test_verdicts_count_each_target_once_and_every_extra_terminal_as_doubled() -> None:
    v = Verdicts()
    v.add(outcome("r", "a", "SENT"), 1)  # not terminal
    v.add(outcome("r", "a", "ANSWERED"), 5)
    v.add(outcome("r", "a", "ANSWERED"), 9)  # the same verdict twice is a duplicate
    v.add(outcome("r", "b", "SKIPPED", reason="coalesced"), 7)  # rides on a carrier: not yet
    v.add(outcome("r", "c", "UNANSWERED", repush=1), 8)  # a re-push's outcome is evidence only
    v.add(outcome("r", "d", "FAILED"), 3)
    assert v.count("r") == {"ANSWERED": 1, "FAILED": 1}
    assert v.doubled == 1
    assert v.last_ms == 5  # the duplicate is not the last verdict


def sample(t: float, lag: int, rss: int = 0) -> Sample:
    return Sample(t, {"svc": rss}, {"svc": lag}, {})


def test_drain_is_the_first_zero_after_the_peak() -> None:
    samples = [sample(0, 0), sample(10, 0), sample(12, 50), sample(14, 900), sample(16, 0),
               sample(18, 30), sample(20, 0)]
    assert drain(samples, since=10, name="svc") == (900, 6)
    assert drain([sample(10, 5), sample(12, 7)], since=10, name="svc") == (7, None)


def test_slope_is_mib_per_minute_and_zero_when_flat() -> None:
    flat = [(float(t), 100_000.0) for t in range(0, 600, 5)]
    assert slope_mib_per_min(flat) == 0.0
    growing = [(float(t), 100_000.0 + t * 1024 / 60) for t in range(0, 600, 5)]  # 1 MiB/min
    assert abs(slope_mib_per_min(growing) - 1.0) < 1e-9


def test_lives_split_at_restarts_and_skip_each_warm_up() -> None:
    soak = Soak(faults=[(300.0, "svc"), (400.0, "other")], end_publish=1000.0)
    samples = [sample(float(t), 0, rss=1000) for t in range(0, 1100, 10)]
    spans = [(life[0][0], life[-1][0]) for life in lives(samples, soak, "svc")]
    assert spans == [(60.0, 290.0), (360.0, 1000.0)]
