"""Registry ingestion: check-ins/s into the fan-out's registry, this tree beside a baseline
commit in the same run; then the registry of 1,000,000 enrollments: RSS and restart-to-ready.

Run: MDMPUSH_TEST_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python tests/bench/bench_registry.py \
         [--n 200000] [--baseline-n 40000] [--baseline REV] [--million 1000000]
         [--profile DIR] [--only-new] [--keep DIR] [--new REV]

Rate (issue 12 item 3, bar >= 50,000 check-ins/s): N TokenUpdates of N new enrollments (the
registry build the 5,000/s figure timed) are produced to the check-ins topic before the worker
starts, so the bench's producer competes with nobody; the worker (`python -m services.fanout`, a
process as deployed) then applies them. The rate is N over the time from its first DeviceRecord
to its last, both read from the records' own timestamps on the registry topic (producer create
time): start-up is excluded, and the measuring side only polls high watermarks meanwhile. Then
the same for N contacts (command reports of the enrolled devices: each only moves
`last_contact_at`), timed from the worker's committed offsets. The baseline is the fan-out of
`--baseline` (default: the commit before the batched ingestion), extracted with `git archive`
into a scratch directory and run the same way in the same invocation, on fewer records (it is
~10x slower; rates, not totals, are compared).

1 M (`--million`, 0 skips): that many TokenUpdates produced, one worker builds the registry
(time and rate), its RSS once built (VmRSS and peak VmHWM from /proc); it is stopped and
started again, and restart-to-ready is from the process start to the first job of a priority
request (for an enrollment of the registry) published at the same moment: the worker turns it
into a job only once its registry partitions are recovered (services/fanout/store.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Run as a script (python tests/bench/...): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from confluent_kafka import Consumer, TopicPartition

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.kafka.logs import client_logger
from services.common.settings import KafkaSettings
from tests.fanout.harness import REPO, T1, Publisher, Worker, request
from tests.support.bench_stack import produce
from tests.support.cpu import cpu_seconds

BAR = 50_000
#: The commit before the fan-out's batched ingestion: the old per-record path.
DEFAULT_BASELINE = "2ee50df"
PARTITIONS = 12


def kafka_for(name: str) -> tuple[KafkaSettings, Topics]:
    kafka = KafkaSettings(
        bootstrap_servers=os.environ.get("MDMPUSH_TEST_BOOTSTRAP", "127.0.0.1:9092"),
        topic_prefix=f"bench-reg-{name}-{uuid.uuid4().hex[:6]}.",
    )
    create_topics(kafka, all_topics())
    return kafka, Topics(kafka.topic_prefix)


def token_updates(ids: Iterable[int], at: int) -> Iterator[tuple[str, dict[str, object]]]:
    for i in ids:
        eid = f"E{i:07d}"
        yield eid, {
            "event_id": f"tu-{i}", "enrollment_id": eid, "tenant": "acme",
            "message_type": "TOKEN_UPDATE", "raw_message_type": "TokenUpdate", "udid": eid,
            "topic": T1, "token_hex": f"{i:064x}", "push_magic": f"m-{i}", "command_uuid": None,
            "status": None, "occurred_at": at, "source": "bench"}


def contacts(ids: Iterable[int], at: int) -> Iterator[tuple[str, dict[str, object]]]:
    for i in ids:
        eid = f"E{i:07d}"
        yield eid, {
            "event_id": f"cr-{i}", "enrollment_id": eid, "tenant": "acme",
            "message_type": "COMMAND_REPORT", "raw_message_type": "", "udid": eid, "topic": None,
            "token_hex": None, "push_magic": None, "command_uuid": f"c-{i}", "status": "Idle",
            "occurred_at": at + i % 1000, "source": "bench"}


class Watch:
    """Offsets of the registry and check-ins topics, read without consuming them."""

    def __init__(self, kafka: KafkaSettings, topics: Topics) -> None:
        self.consumer = Consumer(kafka.consumer_config(f"bench-{uuid.uuid4().hex}"),
                                 logger=client_logger("bench"))
        # Whose offsets the check-ins have: faust's group (the old path), or the reader's.
        app = f"{kafka.topic_prefix}mdmpush-fanout"
        self.groups = [Consumer(kafka.consumer_config(group), logger=client_logger("bench"))
                       for group in (app, f"{app}-checkins")]
        self.topics = topics

    def partitions(self, topic: str) -> list[TopicPartition]:
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return [TopicPartition(topic, p) for p in meta]

    def ends(self, topic: str) -> dict[int, int]:
        return {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in self.partitions(topic)}

    def committed(self, topic: str) -> int:
        return max(sum(max(tp.offset, 0) for tp in group.committed(self.partitions(topic),
                                                                     timeout=10))
                   for group in self.groups)

    def stamps(self, topic: str, ends_before: dict[int, int]) -> tuple[int, int]:
        """(earliest, latest) record timestamp written after `ends_before` (ms)."""
        firsts: list[int] = []
        lasts: list[int] = []
        for p, end in self.ends(topic).items():
            start = ends_before.get(p, 0)
            if end <= start:
                continue
            for offset, into in ((start, firsts), (end - 1, lasts)):
                self.consumer.assign([TopicPartition(topic, p, offset)])
                msg = self.consumer.poll(10)
                assert msg is not None and msg.error() is None, msg
                into.append(msg.timestamp()[1])
        return min(firsts), max(lasts)

    def close(self) -> None:
        self.consumer.close()
        for group in self.groups:
            group.close()


def wait_until(what: str, done: Callable[[], bool], timeout_s: float, worker: Worker) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if not worker.alive():
            raise SystemExit(f"the fan-out died while {what}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not done after {timeout_s:.0f}s\n{worker.log_tail()}")
        time.sleep(0.05)


@contextmanager
def profiled(worker: Worker, out: Path | None, name: str) -> Iterator[None]:
    """py-spy record of the worker while the body runs (when `out` is given)."""
    if out is None or worker.proc is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(worker.proc.pid),
         "-f", "raw", "-o", str(out / f"{name}.txt"), "-r", "200", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def cpu_s(pid: int) -> float:
    """CPU seconds of the worker so far; it must be alive (`wait_until` checked it)."""
    used = cpu_seconds(pid)
    if used is None:
        raise SystemExit(f"the fan-out (pid {pid}) is gone")
    return used


@dataclass
class Phase:
    """One ingestion phase of one worker: wall rate, and the worker's CPU per check-in (the
    figure that holds on a shared machine: 1e6 / µs is the rate one free core would give)."""

    rate: float
    cpu_us: float


def ingest_rate(label: str, code: Path, n: int, directory: Path,
                profile: Path | None) -> tuple[Phase, Phase]:
    """(TokenUpdates, contacts) phases of the fan-out in `code` on n records each."""
    kafka, topics = kafka_for(label)
    at = int(time.time() * 1000) - 3_600_000
    produce(kafka, topics.checkins, "CheckinEvent", token_updates(range(n), at))
    worker = Worker(kafka, directory, MDMPUSH_FANOUT_PARTITIONS=str(PARTITIONS),
                    MDMPUSH_FANOUT_COMMIT_INTERVAL_S="0.2", MDMPUSH_FANOUT_COALESCE="false")
    worker.cwd = code
    watch = Watch(kafka, topics)
    worker.start()
    assert worker.proc is not None
    pid = worker.proc.pid
    try:
        with profiled(worker, profile, f"{label}-token-updates"):
            wait_until("starting", lambda: sum(watch.ends(topics.registry).values()) > 0, 400,
                       worker)
            cpu0 = cpu_s(pid)
            wait_until("building the registry",
                       lambda: sum(watch.ends(topics.registry).values()) >= n, 300, worker)
            cpu1 = cpu_s(pid)
        first, last = watch.stamps(topics.registry, {})
        build = Phase(n / max((last - first) / 1000, 1e-3), (cpu1 - cpu0) / n * 1e6)
        # Contacts: the check-ins topic's committed offsets reach its end.
        produced = sum(watch.ends(topics.checkins).values())
        produce(kafka, topics.checkins, "CheckinEvent", contacts(range(n), at + 1))
        end = produced + n
        started, cpu0 = time.monotonic(), cpu_s(pid)
        with profiled(worker, profile, f"{label}-contacts"):
            wait_until("applying contacts",
                       lambda: watch.committed(topics.checkins) >= end, 300, worker)
        contact = Phase(n / (time.monotonic() - started), (cpu_s(pid) - cpu0) / n * 1e6)
    finally:
        worker.stop()
        watch.close()
    return build, contact


def baseline_tree(rev: str, directory: Path) -> Path:
    """The repository's `services` and `schemas` at `rev`, extracted (the repository untouched)."""
    tree = directory / f"baseline-{rev}"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "services", "schemas"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def million(n: int, directory: Path) -> list[str]:
    """Build a registry of n enrollments, measure RSS, restart, measure restart-to-ready."""
    kafka, topics = kafka_for("million")
    at = int(time.time() * 1000) - 3_600_000
    t0 = time.monotonic()
    produce(kafka, topics.checkins, "CheckinEvent", token_updates(range(n), at))
    produced_s = time.monotonic() - t0
    worker = Worker(kafka, directory, MDMPUSH_FANOUT_PARTITIONS=str(PARTITIONS),
                    MDMPUSH_FANOUT_COMMIT_INTERVAL_S="1.0")
    watch = Watch(kafka, topics)
    lines = []
    worker.start()
    try:
        started = time.monotonic()
        wait_until("building the registry", lambda: sum(watch.ends(topics.registry).values())
                   >= n, 900, worker)
        built_s = time.monotonic() - started
        first, last = watch.stamps(topics.registry, {})
        time.sleep(2)  # the last batch's work settles
        assert worker.proc is not None
        rss, hwm = rss_kb(worker.proc.pid)
        rate = n / max((last - first) / 1000, 1e-3)
        lines.append(f"{n:,} enrollments (in-memory table): TokenUpdates produced in "
                     f"{produced_s:.1f}s; registry built {built_s:.1f}s after the worker "
                     f"started ({rate:,.0f}/s first to last DeviceRecord); RSS "
                     f"{rss / 1024:,.0f} MiB (peak {hwm / 1024:,.0f} MiB)")
        worker.stop()
        jobs_before = sum(watch.ends(topics.jobs_priority).values())
        publisher = Publisher(kafka)
        worker.start()
        start = time.monotonic()
        publisher.record(topics.requests, "NotificationRequest",
                         request("ready", ids=[f"E{n - 1:07d}"], initiator="USER"), "acme")
        wait_until("recovering", lambda: sum(watch.ends(topics.jobs_priority).values())
                   > jobs_before, 900, worker)
        ready_s = time.monotonic() - start
        time.sleep(1)
        rss, hwm = rss_kb(worker.proc.pid)
        lines.append(f"{n:,} enrollments (in-memory table): restart-to-ready {ready_s:.1f}s "
                     f"(process start to the first job of a request published at start); RSS "
                     f"after recovery {rss / 1024:,.0f} MiB (peak {hwm / 1024:,.0f} MiB)")
    finally:
        worker.stop()
        watch.close()
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--baseline-n", type=int, default=40_000)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--million", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--new", default=None,
                        help="run this commit as the new path (default: the working tree)")
    parser.add_argument("--only-new", action="store_true")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the workers' logs here (kept) instead of a scratch dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        scratch = args.keep or Path(tmp)
        met = True
        if args.n:
            old = None
            if not args.only_new:
                tree = baseline_tree(args.baseline, scratch)
                old = ingest_rate("old", tree, args.baseline_n, scratch / "old-run",
                                  args.profile)
            code = baseline_tree(args.new, scratch) if args.new else REPO
            new = ingest_rate("new", code, args.n, scratch / "new-run", args.profile)
            for what, i in (("TokenUpdates (registry build)", 0),
                            ("contacts (command reports)", 1)):
                now = new[i]
                line = (f"{what}: {now.rate:,.0f} check-ins/s, {now.cpu_us:.0f} µs CPU each "
                        f"(~{1e6 / now.cpu_us:,.0f}/s per free core) on {args.n:,}")
                if old:
                    was = old[i]
                    line += (f"; baseline {args.baseline}: {was.rate:,.0f}/s, {was.cpu_us:.0f} µs "
                             f"CPU on {args.baseline_n:,}; new/old {now.rate / was.rate:.1f}x "
                             f"rate, {was.cpu_us / now.cpu_us:.1f}x less CPU")
                print(line)
            met = new[0].rate >= BAR and new[1].rate >= BAR
            print(f"bar >= {BAR:,} check-ins/s (wall, both phases, this machine now): "
                  f"{'MET' if met else 'MISSED'} (load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores)")
        if args.million:
            for line in million(args.million, scratch / "million"):
                print(line)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
