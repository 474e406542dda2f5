"""The two ways a starting worker lost records it had fetched, closed in `services.fanout.app`.

- faust resumes the flow a second time after seeking the stream partitions at the end of
  recovery; mode's FlowControlEvent cleared the stream queues then, dropping what the fetcher
  had delivered meanwhile.
- faust's fetch passed its live set of active partitions to aiokafka, which reads an empty set as
  "every partition"; faust then dropped the stream records it had not asked for.

Either lost test_fanout_restart's request (or some of its slices) about 1 run in 7.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from services.fanout.app import _App, _ConsumerThread, _FlowControl


def test_resume_while_flowing_keeps_the_queues() -> None:
    async def run() -> None:
        app = _App("flow-control-test", web_enabled=False, autodiscover=False)
        flow = app.flow_control
        assert isinstance(flow, _FlowControl)
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
    thread = _ConsumerThread.__new__(_ConsumerThread)
    live = {TP("t", 0)}

    async def run() -> None:
        assert await thread._fetch_records(cast(Any, None), set(), timeout=1.0) == {}
        assert seen == []  # nothing asked for: nothing returned, not everything
        await thread._fetch_records(cast(Any, None), live, timeout=1.0)
        live.clear()  # faust pausing the partitions while aiokafka waits
        assert seen == [{TP("t", 0)}]

    asyncio.run(run())
