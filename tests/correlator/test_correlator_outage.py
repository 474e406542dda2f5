"""Kafka unreachable: the correlator stays up, says it is not ready, and resumes by itself.

The correlator's bootstrap address is a port where nothing listens at first (the broker is
"down"); later a TCP forwarder to the real broker opens on it (the broker is "back"). The
session's shared broker is never stopped. Before the fix the correlator exited after
`kafka_wait_s` and a supervisor had to restart it in a loop until Kafka answered.
(A broker killed mid-run is tests/faults' case, on a private broker: MDMPUSH_FAULTS=full.)
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager

import pytest

from services.common.catalogue import Topics
from services.common.clock import Clock
from services.common.settings import KafkaSettings
from tests.correlator.harness import Correlator, Feed, Reader, free_port, verdicts

pytestmark = pytest.mark.kafka


@contextmanager
def forwarder(port: int, target: tuple[str, int]) -> Iterator[None]:
    """Accept on `port` and pipe each connection to `target` (the broker, answering again)."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with src, dst:
            while not stop.is_set():
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        server.close()
        thread.join(5)


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_kafka_unreachable_at_start_is_ridden_out_and_work_resumes_when_it_answers(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    clock = Clock()
    feed = Feed(kafka_settings, topics, clock)
    feed.token_update("E1", clock.now_ms() - 60_000)
    down, ops = free_port(), free_port()
    proc = Correlator(kafka_settings, clock, kafka_wait_s=1, retry_backoff_max_s=2,
                      metrics_port=ops)
    proc.env["MDMPUSH_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{down}"
    host, broker_port = kafka_settings.bootstrap_servers.split(",")[0].rsplit(":", 1)
    try:
        proc.start()
        # Three sessions given up on (1 s, 2 s, 2 s of back-off): it used to exit at the first.
        proc.wait_for_log("a new one starts", timeout_s=60, times=3)
        status, body = readyz(ops)
        assert status == 503 and "Kafka unavailable" in body, (status, body)
        with forwarder(down, (host, int(broker_port))):
            proc.wait_for_log("assigned outcomes partitions", timeout_s=60)
            feed.outcome("E1")
            feed.checkin("E1")
            with closing(Reader(kafka_settings, topics.outcomes, "PushOutcome")) as outcomes:
                outcomes.wait(lambda rs: len(verdicts(rs)) >= 1, timeout_s=60, what="verdict")
                assert [(v["job_id"], v["state"]) for v in verdicts(outcomes.records)] == [
                    ("req-1/E1", "ANSWERED")]
            deadline = time.monotonic() + 30
            while readyz(ops)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            status, body = readyz(ops)
            assert status == 200, body
            assert proc.proc is not None and proc.proc.poll() is None
    finally:
        proc.stop()
    log = proc.log.read_text()
    assert "correlator stopped" not in log
    assert json.loads(log.splitlines()[-1])["level"] != "CRITICAL"
