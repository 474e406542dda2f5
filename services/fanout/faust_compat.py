"""Every override of faust-streaming's private internals, in one place, for one faust version.

The fan-out is a `faust.App` with two fixes to how a starting worker hands fetched records to its
streams; without them it could lose records it had fetched (test_fanout_restart lost its request
or some of its slices about 1 run in 7). A third makes the creation of its internal topics and
table changelogs retry (bounded, logged) where faust let one refusal or timeout of a loaded broker
end the worker at start. Both replace private methods, so they are written for
exactly `FAUST_VERSION` (pinned in pyproject.toml) and `check_overrides()` refuses to run on a
faust whose overridden methods changed name or signature (tests/fanout/test_faust_compat.py runs
it, and so does every `create_app`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import TransportT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)

#: The faust-streaming release these overrides were written and tested for.
FAUST_VERSION = "0.15.3"

#: Attempts at creating one internal topic, and the pauses between them (1 s doubling to 30 s:
#: about five minutes in all, as long as the fan-out's producers retry a refused record).
CREATE_TOPIC_ATTEMPTS = 12
CREATE_TOPIC_BACKOFF_S = 1.0
CREATE_TOPIC_MAX_BACKOFF_S = 30.0


class FlowControl(FlowControlEvent):
    """faust's flow control of the stream queues, without the drop of a resume while flowing.

    `FlowControlEvent.resume()` clears every stream queue, which is right after a suspend (the
    queues may hold events of revoked partitions) and wrong while the flow is already active.
    faust does the latter once per assignment: recovery resumes the flow to read the changelogs,
    then `Recovery.on_recovery_completed` resumes the stream partitions, awaits the seek to the
    committed offsets, and resumes the flow again. Whatever the fetcher delivered during that
    await (a request already waiting when the worker joined; the slices the request became) was
    cleared from the queues unprocessed and unacknowledged, with the fetch position past it: it
    stayed unprocessed until the next rebalance or restart. Only a suspended flow is cleared.
    """

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread, asking aiokafka for a fixed, non-empty set of partitions.

    faust hands its live set of active partitions to aiokafka's `fetched_records`, which waits
    up to a second for records and reads an empty set as "every partition". At the end of a
    recovery the set is briefly empty (changelogs paused, stream partitions not yet resumed): a
    fetch waiting then returned the records aiokafka had prefetched for the stream partitions,
    and faust dropped them as not active, with their position consumed. A request published
    while the worker was joining was lost that way. The partitions are copied when the fetch
    starts, and an empty copy fetches nothing.
    """

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Mapping[TP, list[Any]]:
        wanted = set(active_partitions)
        if not wanted:
            return {}
        return await super()._fetch_records(
            consumer, wanted, timeout=timeout, max_records=max_records
        )


class Consumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, running `ConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


async def create_with_retries(
    create: Callable[[], Awaitable[None]],
    topic: str,
    stopping: Callable[[], bool],
    *,
    attempts: int = CREATE_TOPIC_ATTEMPTS,
    backoff_s: float = CREATE_TOPIC_BACKOFF_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """`create()`, again after each failure with a growing pause, `attempts` times at most.

    A broker under load answers CreateTopics with REQUEST_TIMED_OUT (the controller did not
    finish in time) or not at all; faust raised that out of the worker's start and the worker
    exited, for a human to restart. The creation usually completes on the broker anyway, and
    the next attempt then finds the topic. The last failure is raised (the worker exits, as
    before, after about five minutes); a worker that is stopping stops trying."""
    pause = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            await create()
            return
        except Exception as exc:
            if attempt == attempts or stopping():
                raise
            log.warning("creating topic %r failed (attempt %d of %d): %r; trying again in "
                        "%.0fs", topic, attempt, attempts, exc, pause)
        await sleep(pause)
        pause = min(pause * 2, CREATE_TOPIC_MAX_BACKOFF_S)


class Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport, with `Consumer`, creating topics with retries."""

    Consumer = Consumer

    async def _create_topic(
        self,
        owner: Any,
        client: aiokafka.AIOKafkaClient,
        topic: str,
        partitions: int,
        replication: int,
        **kwargs: Any,
    ) -> None:
        async def create() -> None:
            await super(Transport, self)._create_topic(
                owner, client, topic, partitions, replication, **kwargs)

        await create_with_retries(create, topic, lambda: bool(owner.should_stop),
                                  backoff_s=CREATE_TOPIC_BACKOFF_S)


class App(faust.App):
    """faust.App with the start-up fixes above (flow control, consumer thread, topic creation)."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)


#: (faust's class, the private method replaced, its parameters as the override expects them).
OVERRIDES: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (FlowControlEvent, "resume", ("self",)),
    (FlowControlEvent, "is_active", ("self",)),
    (faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records",
     ("self", "consumer", "active_partitions", "timeout", "max_records")),
    (faust_aiokafka.Consumer, "_new_consumer_thread", ("self",)),
    (faust.App, "_new_transport", ("self",)),
    (faust_aiokafka.Transport, "_create_topic",
     ("self", "owner", "client", "topic", "partitions", "replication", "kwargs")),
)


class FaustCompatError(RuntimeError):
    """The installed faust is not the one the overrides of this module were written for."""


def check_overrides() -> None:
    """Raise FaustCompatError unless faust is FAUST_VERSION and every overridden method exists
    with the parameters the override expects (and `flow_control` is still a cached property,
    `Transport.Consumer` still the class faust's transport instantiates)."""
    installed = version("faust-streaming")
    problems = [] if installed == FAUST_VERSION else [
        f"faust-streaming {installed} is installed; the overrides are for {FAUST_VERSION}"]
    for owner, name, params in OVERRIDES:
        method = owner.__dict__.get(name)
        if method is None:
            problems.append(f"{owner.__qualname__}.{name} no longer exists")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != params:
            problems.append(f"{owner.__qualname__}.{name}{found} is not {params}")
    if not isinstance(faust.App.__dict__.get("flow_control"), cached_property):
        problems.append("faust.App.flow_control is no longer a cached_property")
    if faust_aiokafka.Transport.__dict__.get("Consumer") is not faust_aiokafka.Consumer:
        problems.append("faust's aiokafka Transport no longer names its Consumer class")
    if problems:
        raise FaustCompatError(
            "services/fanout/faust_compat.py: " + "; ".join(problems)
            + " — re-check each override against the new faust before changing the pin")
