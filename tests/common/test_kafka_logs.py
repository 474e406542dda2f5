"""librdkafka's log lines go through Python logging, one line per outage, none raw on stderr."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from services.common.kafka.logs import QUIET_S, REMIND_S, OutageFilter, quiet_async_clients

SCRIPT = textwrap.dedent("""
    import logging
    from services.common.kafka.producer import DeliveryError, ReliableProducer
    from services.common.settings import KafkaSettings

    logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(name)s: %(message)s")
    producer = ReliableProducer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), name="probe",
                                **{"message.timeout.ms": 3000})
    try:
        producer.produce_sync("t", b"v", timeout_s=20)
    except DeliveryError as exc:
        print("refused:", exc)
""")


def test_closed_port_logs_one_readable_line_and_nothing_raw() -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout and "_MSG_TIMED_OUT" in run.stdout
    assert "%3|" not in run.stderr and "%4|" not in run.stderr and "%6|" not in run.stderr
    client_lines = [line for line in run.stderr.splitlines() if "mdmpush.kafka.probe" in line]
    assert len(client_lines) == 1, run.stderr
    assert "kafka client 'probe'" in client_lines[0]
    assert "Connection refused" in client_lines[0]
    assert "[thrd:" not in client_lines[0]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(level: int, text: str) -> logging.LogRecord:
    return logging.LogRecord("x", level, __file__, 1, "%s [%s] %s",
                             ("FAIL", "rdkafka#producer-1", f"[thrd:b/1]: {text}"), None)


def test_outage_filter_collapses_reminds_and_recovers() -> None:
    clock = Clock()
    f = OutageFilter("sender", clock=clock)
    first = _record(logging.ERROR, "Connection refused")
    assert f.filter(first)
    assert first.getMessage() == "kafka client 'sender' (FAIL): Connection refused"
    passed = 0
    for _ in range(100):
        clock.now += 1
        passed += f.filter(_record(logging.ERROR, "Connection refused"))
    assert passed == 0 and f.suppressed == 100
    assert f.filter(_record(logging.INFO, "info passes"))
    step = QUIET_S / 2  # the outage goes on: a warning every 30 s until a reminder is due
    dropped = 100
    while clock.now + step < 1000.0 + REMIND_S:
        clock.now += step
        assert not f.filter(_record(logging.ERROR, "Connection refused"))
        dropped += 1
    clock.now += step
    reminder = _record(logging.ERROR, "Connection refused")
    assert f.filter(reminder)
    assert f"still failing; {dropped} similar" in reminder.getMessage()
    f.recovered()
    assert f.filter(_record(logging.ERROR, "Connection refused"))  # a new outage is news
    clock.now += QUIET_S
    assert f.filter(_record(logging.ERROR, "after a quiet minute"))


def test_aiokafka_reconnect_errors_collapse(caplog: pytest.LogCaptureFixture) -> None:
    """faust's clients (aiokafka) log each failed reconnect: one line per outage gets through."""
    quiet_async_clients()
    quiet_async_clients()  # idempotent: still one filter
    logger = logging.getLogger("aiokafka.conn")
    assert sum(isinstance(f, OutageFilter) for f in logger.filters) == 1
    with caplog.at_level(logging.ERROR, logger="aiokafka.conn"):
        for _ in range(50):
            logger.error("Unable connect to node with id 0: Connect call failed")
    assert len([r for r in caplog.records if r.name == "aiokafka.conn"]) == 1
