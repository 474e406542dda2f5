"""The faust overrides of `services.fanout.faust_compat`: they still apply, and they still fix
the two ways a starting worker lost records it had fetched.

- faust resumes the flow a second time after seeking the stream partitions at the end of
  recovery; mode's FlowControlEvent cleared the stream queues then, dropping what the fetcher
  had delivered meanwhile.
- faust's fetch passed its live set of active partitions to aiokafka, which reads an empty set as
  "every partition"; faust then dropped the stream records it had not asked for.

Either lost test_fanout_restart's request (or some of its slices) about 1 run in 7.
- faust let one failed creation of an internal topic (a loaded broker's REQUEST_TIMED_OUT) end
  the worker at start; the transport now tries again with a growing pause, bounded.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from services.fanout import faust_compat
from services.fanout.faust_compat import (
    App,
    ConsumerThread,
    FaustCompatError,
    FlowControl,
    check_overrides,
    create_with_retries,
)


def test_the_installed_faust_is_the_one_the_overrides_were_written_for() -> None:
    check_overrides()  # raises FaustCompatError naming every override that stopped applying


def test_a_changed_faust_method_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    async def renamed(self: object, consumer: object, partitions: object) -> dict:
        return {}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", renamed)
    monkeypatch.delattr(faust_aiokafka.Consumer, "_new_consumer_thread")
    monkeypatch.setattr(faust_compat, "FAUST_VERSION", "0.0.1")
    with pytest.raises(FaustCompatError) as info:
        check_overrides()
    message = str(info.value)
    assert "_fetch_records('self', 'consumer', 'partitions')" in message
    assert "Consumer._new_consumer_thread no longer exists" in message
    assert "the overrides are for 0.0.1" in message


def test_the_app_uses_the_overrides() -> None:
    async def run() -> None:
        app = App("compat-test", web_enabled=False, autodiscover=False)
        assert isinstance(app.flow_control, FlowControl)
        assert app.transport.Consumer is faust_compat.Consumer
        async def noop(*_: object) -> None:
            """No record or rebalance reaches it: the consumer is never started."""

        consumer = app.transport.create_consumer(
            callback=noop, on_partitions_revoked=noop, on_partitions_assigned=noop)
        assert isinstance(consumer, faust_compat.Consumer)
        assert isinstance(consumer._thread, ConsumerThread)

    asyncio.run(run())


def test_resume_while_flowing_keeps_the_queues() -> None:
    async def run() -> None:
        app = App("flow-control-test", web_enabled=False, autodiscover=False)
        flow = app.flow_control
        assert isinstance(flow, FlowControl)
        queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)

        flow.resume()  # start-up: suspended -> flowing
        queue.put_nowait("delivered during the seek")
        flow.resume()  # recovery's second resume, flow already active
        assert queue.qsize() == 1

        flow.suspend()  # a rebalance: events of revoked partitions must not survive
        flow.resume()
        assert queue.qsize() == 0

    asyncio.run(run())


def test_fetch_asks_aiokafka_for_a_fixed_non_empty_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka reads an empty partition set as "all": faust then dropped the stream records."""
    seen: list[set[TP]] = []

    async def fetch(self: object, consumer: object, partitions: set[TP], **_: object) -> dict:
        seen.append(partitions)
        return {}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetch)
    thread = ConsumerThread.__new__(ConsumerThread)
    live = {TP("t", 0)}

    async def run() -> None:
        assert await thread._fetch_records(cast(Any, None), set(), timeout=1.0) == {}
        assert seen == []  # nothing asked for: nothing returned, not everything
        await thread._fetch_records(cast(Any, None), live, timeout=1.0)
        live.clear()  # faust pausing the partitions while aiokafka waits
        assert seen == [{TP("t", 0)}]

    asyncio.run(run())


class _Broker:
    """CreateTopics answered with a timeout `failures` times, then done (the seam of the test)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def create(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("Cannot create topic: x-changelog (7): request timed out")


def test_a_topic_creation_that_times_out_is_tried_again_with_growing_pauses() -> None:
    broker, pauses = _Broker(failures=3), []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    asyncio.run(create_with_retries(broker.create, "x-changelog", lambda: False, attempts=5,
                                    backoff_s=1.0, sleep=sleep))
    assert broker.calls == 4
    assert pauses == [1.0, 2.0, 4.0]


def test_topic_creation_gives_up_after_its_attempts_or_when_stopping() -> None:
    async def sleep(seconds: float) -> None:
        pass

    broker = _Broker(failures=10)
    with pytest.raises(RuntimeError, match="timed out"):
        asyncio.run(create_with_retries(broker.create, "x", lambda: False, attempts=3,
                                        sleep=sleep))
    assert broker.calls == 3
    stopping = _Broker(failures=10)
    with pytest.raises(RuntimeError):
        asyncio.run(create_with_retries(stopping.create, "x", lambda: True, sleep=sleep))
    assert stopping.calls == 1


def test_the_apps_transport_creates_topics_with_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The override is the one faust's consumer and producer call, and it wraps faust's own."""
    calls: list[str] = []

    async def flaky(self: object, owner: object, client: object, topic: str, *_: object,
                    **__: object) -> None:
        calls.append(topic)
        if len(calls) == 1:
            raise RuntimeError("Cannot create topic (7)")

    monkeypatch.setattr(faust_aiokafka.Transport, "_create_topic", flaky)
    monkeypatch.setattr(faust_compat, "CREATE_TOPIC_BACKOFF_S", 0.0)

    async def run() -> None:
        app = App("create-test", web_enabled=False, autodiscover=False)
        owner = type("Owner", (), {"should_stop": False})()
        transport = cast(faust_compat.Transport, app.transport)
        await transport._create_topic(owner, cast(Any, None), "t-changelog", 1, 1)

    asyncio.run(run())
    assert calls == ["t-changelog", "t-changelog"]
