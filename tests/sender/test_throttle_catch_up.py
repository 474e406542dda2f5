"""The throttle under a loaded loop: a bucket served late by long turns keeps its rate, makes up
at most CATCH_UP_S at once, and an idle bucket still starts afresh (pure logic, stepped clocks).

Why: with another certificate's flood on the same sender, turns of 0.1-0.4 s came back to
buckets due every 0.12 s (6,000/min in 12 shards); forgiving 50 ms of each delay only, the
throttled certificates fell 9-24 % short at the simulator (bench_throttle.py --only-multi).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from services.common.policy import PushPolicy
from services.sender.throttle import CATCH_UP_S, TokenBucket
from tests.sender.loop_fakes import CERT, OTHER, TOPICS, job, make_loop


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(bucket: TokenBucket, clock: FakeClock, seconds: float,
          turn_s: Callable[[], float]) -> list[float]:
    """A loop with jobs always waiting for the bucket that comes back only after each turn
    (busy with other work for `turn_s()`), then sends all that is due; the send times."""
    sent: list[float] = []
    end = clock.now + seconds
    while clock.now < end:
        while bucket.wait_s() == 0 and bucket.try_take(more=True):
            sent.append(clock.now)
        clock.now += turn_s()
    return sent


def largest_in_a_second(times: list[float]) -> int:
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


@pytest.mark.parametrize("turns", ["fixed 0.2 s", "random 0.02-0.25 s"])
def test_a_backlogged_bucket_served_by_long_turns_keeps_its_rate(turns: str) -> None:
    clock = FakeClock()
    bucket = TokenBucket(500, clock)  # 6,000/min in 12 shards: one send due every 0.12 s
    draw = random.Random(7)
    turn_s = ((lambda: 0.2) if turns.startswith("fixed")
              else (lambda: draw.uniform(0.02, CATCH_UP_S)))
    sent = serve(bucket, clock, 120, turn_s)
    # Forgiving only 50 ms of each late turn, 0.2 s turns sent one push a turn: 300/min.
    assert len(sent) == pytest.approx(1000, abs=2)
    # Made up at once, but never more than CATCH_UP_S' worth: 1.25 s of the rate in any second.
    assert largest_in_a_second(sent) <= bucket.most_in(1.0) == int((1 + CATCH_UP_S) / 0.12) + 1


def test_a_stall_longer_than_the_catch_up_is_made_up_for_catch_up_s_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(6000, clock)  # 100/s, a burst of 10 after an idle period
    assert bucket.try_take(more=True)
    clock.now += 5.0  # a 5 s stall with jobs waiting: 500 sends were due
    made_up = 0
    while bucket.try_take(more=True):
        made_up += 1
    assert made_up == pytest.approx(CATCH_UP_S * 100 + 10, abs=1)


def test_an_idle_bucket_makes_nothing_up() -> None:
    clock = FakeClock()
    bucket = TokenBucket(500, clock)
    assert bucket.try_take(more=False)  # the last job waiting: nothing owed after it
    clock.now += 0.2  # a new job arrives after the due time: the bucket was idle, not late
    assert bucket.try_take(more=True)
    assert not bucket.try_take(more=True)  # one send, no catch-up of the idle 0.08 s
    # Owed: the next is due 0.12 s after the previous due time, not after that late send.
    clock.now += 0.12 + 0.1
    assert bucket.try_take(more=True) and bucket.try_take(more=True)
    assert not bucket.try_take(more=True)


def test_the_loop_keeps_a_throttled_rate_while_long_turns_serve_another_certificate() -> None:
    """Through the sender's dispatch: 600/min on one certificate while each turn of the loop
    takes 0.25 s (answering the other certificate's flood), for 30 s of the stepped clock."""
    loop = make_loop(policies={CERT: PushPolicy(CERT, bulk_per_minute=600)})
    loop.produce(TOPICS.jobs_bulk, *(job(n) for n in range(400)),
                 *(job(1000 + n, topic=OTHER) for n in range(2000)))
    for _ in range(120):
        loop.step(advance_s=0.25)
        loop.pool.answer()
    throttled = sum(1 for request, _ in loop.pool.requests if request.topic == CERT)
    # 30 s at 10/s (the first send at once); a push a turn (4/s, 120) before the catch-up.
    assert throttled == pytest.approx(300, abs=2)
    assert sum(1 for request, _ in loop.pool.requests if request.topic == OTHER) == 2000
