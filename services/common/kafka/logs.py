"""librdkafka's log lines through Python logging, one readable line per outage per client.

Without a `logger=`, librdkafka prints to stderr in its raw format (`%3|1712|FAIL|rdkafka#...`)
and repeats every connection failure every few hundred milliseconds: a stopped broker buries
everything else a process prints. Every confluent-kafka client of the project is built with
`logger=client_logger(role)`, whose filter lets the first warning of an outage through, drops its
repeats, and lets one line through again once the client has recovered (or, for a long outage,
one reminder every `REMIND_S` with the count of lines dropped).

confluent-kafka serves these log lines from poll()/consume()/flush(): a client that is never
polled logs nothing (and never writes to stderr either).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: Parent of every Kafka client's logger: `logging.getLogger(LOGGER_PREFIX).setLevel(...)` tunes
#: them all at once.
LOGGER_PREFIX = "mdmpush.kafka"

#: During an outage, one reminder line this often (with the number of lines dropped since).
REMIND_S = 300.0

#: No warning for this long: the outage is over, the next warning is news again.
QUIET_S = 60.0

#: aiokafka (under faust) logs every failed reconnect at ERROR, several loggers deep, and faust's
#: driver repeats the consumer's complaints (filters do not apply to child loggers: each is named).
_ASYNC_CLIENT_LOGGERS = (
    "aiokafka",
    "aiokafka.admin.client",
    "aiokafka.client",
    "aiokafka.cluster",
    "aiokafka.conn",
    "aiokafka.consumer.consumer",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.producer.producer",
    "aiokafka.producer.sender",
    "faust.transport.consumer",
    "faust.transport.drivers.aiokafka",
)

_lock = threading.Lock()
_filters: dict[str, OutageFilter] = {}


class OutageFilter(logging.Filter):
    """Collapses the warnings of one client during an outage into one line (and reminders).

    Records below WARNING pass untouched. confluent-kafka's records (`"%s [%s] %s"`: facility,
    librdkafka handle name, text) are rewritten to name the client's role instead of the handle,
    without librdkafka's thread tag."""

    def __init__(self, role: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.role = role
        self._clock = clock
        self._last_warning: float | None = None  # when the last WARNING+ record arrived
        self._last_passed = 0.0                  # when the last WARNING+ record went through
        self.suppressed = 0

    @property
    def failing(self) -> bool:
        """True while an outage is being collapsed (a warning came within QUIET_S)."""
        return self._last_warning is not None and self._clock() - self._last_warning < QUIET_S

    def recovered(self) -> None:
        """The client has worked again (e.g. a flush was acknowledged): the next warning is news."""
        self._last_warning = None

    def filter(self, record: logging.LogRecord) -> bool:
        _readable(record, self.role)
        if record.levelno < logging.WARNING:
            return True
        now = self._clock()
        fresh = not self.failing
        self._last_warning = now
        if fresh:
            self.suppressed = 0
            self._last_passed = now
            return True
        if now - self._last_passed >= REMIND_S:
            record.msg = f"{record.getMessage()} (still failing; {self.suppressed} similar " \
                         f"line(s) not shown)"
            record.args = ()
            self.suppressed = 0
            self._last_passed = now
            return True
        self.suppressed += 1
        return False


def _readable(record: logging.LogRecord, role: str) -> None:
    """`FAIL [rdkafka#producer-3] [thrd:...]: text` -> `kafka client 'role' (FAIL): text`."""
    args = record.args
    if record.msg == "%s [%s] %s" and isinstance(args, tuple) and len(args) == 3:
        facility, _handle, text = (str(a) for a in args)
        if text.startswith("[thrd:"):
            text = text.split("]: ", 1)[-1]
        record.msg = f"kafka client '{role}' ({facility}): {text}"
        record.args = ()


def client_logger(name: str) -> logging.Logger:
    """The logger to pass as `logger=` to the confluent-kafka client of role `name`.

    One logger (and one outage filter) per role; the first call also quiets aiokafka the same
    way (see `quiet_async_clients`)."""
    logger = logging.getLogger(f"{LOGGER_PREFIX}.{name}")
    with _lock:
        if name not in _filters:
            _filters[name] = OutageFilter(name)
            logger.addFilter(_filters[name])
            quiet_async_clients()
    return logger


def outage_filter(name: str) -> OutageFilter:
    """The outage filter of role `name` (to tell it the client recovered)."""
    client_logger(name)
    return _filters[name]


def quiet_async_clients() -> None:
    """aiokafka's loggers (faust's clients): one line per outage instead of one per retry.

    A filter rather than a level: the first line of an outage is worth seeing. Idempotent."""
    for name in _ASYNC_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OutageFilter) for f in logger.filters):
            logger.addFilter(OutageFilter(name))
