"""Circuit breaker state machine, stepped with a fake clock (no sleeping)."""

from __future__ import annotations

from services.sender.apns.breaker import BreakerRegistry, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_opens_for_the_cool_down_then_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(cool_down_s=60.0, clock=clock)
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.record_failure("BadCertificate")
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_after_s() == 60.0
    assert breaker.last_reason == "BadCertificate"
    clock.now += 59.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    assert breaker.retry_after_s() == 0.0


def test_failed_trial_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(cool_down_s=10.0, clock=clock)
    breaker.record_failure("connection")
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure("connection")
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 10
    assert breaker.allow()


def test_late_answers_do_not_change_an_open_breaker() -> None:
    """Answers of requests sent before the outage neither close nor extend it."""
    clock = FakeClock()
    breaker = CircuitBreaker(cool_down_s=10.0, clock=clock)
    breaker.record_failure("connection")
    clock.now += 5
    breaker.record_success()
    assert breaker.state is BreakerState.OPEN
    breaker.record_failure("connection")
    assert breaker.retry_after_s() == 5.0


def test_lost_trial_is_given_up_after_another_cool_down() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(cool_down_s=10.0, clock=clock)
    breaker.record_failure("connection")
    clock.now += 10
    assert breaker.allow()
    clock.now += 9
    assert not breaker.allow()
    assert breaker.retry_after_s() == 1.0
    clock.now += 1
    assert breaker.allow()


def test_registry_keeps_one_breaker_per_certificate() -> None:
    clock = FakeClock()
    breakers = BreakerRegistry(cool_down_s=60.0, clock=clock)
    breakers["topic.a"].record_failure("BadCertificate")
    assert breakers["topic.a"] is breakers["topic.a"]
    assert not breakers["topic.a"].allow()
    assert breakers["topic.b"].allow()
    assert breakers.open_topics() == ["topic.a"]
    clock.now += 60
    assert breakers.open_topics() == ["topic.a"]  # half-open still refuses all but the trial
    assert breakers["topic.a"].allow()
    breakers["topic.a"].record_success()
    assert breakers.open_topics() == []
