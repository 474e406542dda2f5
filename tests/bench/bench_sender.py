"""Sender throughput, Kafka in → outcomes out, beside its peers from the same run.

Usage: ``.venv/bin/python tests/bench/bench_sender.py [--jobs N] [--aioapns N] [--no-h2o]``
(broker: ``MDMPUSH_TEST_BOOTSTRAP``, default 127.0.0.1:9092).

(a) The APNs simulator in its own process; the sender (``python -m services.sender``, another
    process) sends N pre-produced jobs, and aioapns sends M pushes to the same simulator.
    Bar: sender >= 2x aioapns.
(b) h2o (mruby echoing apns-id, started by bench_transports.start_h2o), an endpoint that is not
    the bottleneck; the sender with each transport. Bar: ≥ 10,000 pushes/s with the default.

The sender's rate is measured on its outcome records: count / (last `at` - first `at`), so group
join and connection set-up are excluded and Kafka in and out are included. Bounded: each phase
gives up after --limit-s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
import time
from contextlib import closing
from pathlib import Path

# Run as a script (python tests/bench/bench_sender.py): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sender.apns.pool import DEFAULT_TRANSPORT
from tests.bench.bench_transports import start_h2o
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process, sim_process
from tests.support.sender_harness import Pki, Reader, job, produce_jobs, sender_settings


def sender_rate(pki: Pki, url: str, count: int, directory: Path, limit_s: float,
                **overrides: object) -> float:
    """Pushes/s of one sender process over `count` pre-produced jobs."""
    kafka, topics = fresh_kafka()
    produce_jobs(kafka, topics.jobs_bulk, (job(pki.topics[0], i) for i in range(count)))
    settings = sender_settings(pki, url, **overrides)
    with closing(Reader(kafka, topics.outcomes, decode=False)) as reader:
        cpu_start = None
        with sender_process(settings, kafka, directory / "sender.log") as process:
            deadline = time.monotonic() + limit_s
            while len(reader.records) < count and time.monotonic() < deadline:
                reader.poll(0.2)
                if cpu_start is None and reader.records:
                    cpu_start, counted_from = cpu_seconds(process.pid), len(reader.records)
            if cpu_start is not None and len(reader.records) > counted_from:
                # CPU per push does not depend on what else the machine runs: 1 s / it is the
                # rate one free core would give.
                used = cpu_seconds(process.pid) - cpu_start
                per_push = used / (len(reader.records) - counted_from) * 1e6
                print(f"    sender CPU {per_push:.0f} us/push (one free core: "
                      f"{1e6 / per_push:,.0f} pushes/s)")
    stamps = sorted(m.timestamp()[1] for m in reader.records)
    if len(stamps) < count:
        print(f"    only {len(stamps)}/{count} outcomes within {limit_s}s")
    if len(stamps) < 2:
        return 0.0
    return (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def aioapns_rate(pki: Pki, port: int, count: int, concurrency: int = 1000) -> float:
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsDevelopmentClientProtocol

    cert_dir = pki.cert_dir
    topic = pki.topics[0]

    async def run() -> float:
        client = APNs(
            client_cert=str(cert_dir / f"{topic}.combined.pem"), topic=topic, use_sandbox=True,
            ssl_context=ssl.create_default_context(cafile=str(pki.pki.ca.cert_path)),
            max_connection_attempts=2,
        )
        client.pool.protocol_class = type(
            "SimulatorProtocol", (APNsDevelopmentClientProtocol,),
            {"APNS_SERVER": "127.0.0.1", "APNS_PORT": port},
        )
        gate = asyncio.Semaphore(concurrency)
        ok = 0

        async def one(n: int) -> None:
            nonlocal ok
            async with gate:
                result = await client.send_notification(NotificationRequest(
                    device_token=f"{n:064x}", message={"mdm": f"magic-{n}"},
                    push_type=PushType.MDM, time_to_live=0, priority=10))
                ok += result.is_successful

        await asyncio.gather(*(one(n) for n in range(200)))  # warm-up: connections
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        elapsed = time.perf_counter() - started
        client.pool.close()
        if ok < count + 200:
            print(f"    aioapns: {count + 200 - ok} pushes not successful")
        return count / elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per sender run")
    parser.add_argument("--aioapns", type=int, default=20_000, help="aioapns pushes")
    parser.add_argument("--httpx-jobs", type=int, default=5_000)
    parser.add_argument("--limit-s", type=float, default=120.0)
    parser.add_argument("--no-h2o", action="store_true")
    parser.add_argument("--no-sim", action="store_true", help="skip (a): h2o only")
    parser.add_argument("--transports", default="pycurl,httpx", help="for (b)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; jobs per sender run: {args.jobs:,}")
    with bench_workspace("sender", certificates=1) as (directory, pki):
        if not args.no_sim:
            with sim_process(pki, directory) as port:
                url = f"https://127.0.0.1:{port}"
                sender = sender_rate(pki, url, args.jobs, directory, args.limit_s)
                baseline = aioapns_rate(pki, port, args.aioapns)
            ratio = sender / baseline if baseline else float("inf")
            print(f"(a) simulator: sender {sender:,.0f} pushes/s | aioapns {baseline:,.0f} "
                  f"pushes/s | ratio {ratio:.1f}x (bar >= 2x: {'met' if ratio >= 2 else 'MISSED'})")
        if args.no_h2o:
            return
        h2o, h2o_port = start_h2o(directory, pki.pki.server.cert_path, pki.pki.server.key_path,
                                  threads=1)
        try:
            url = f"https://127.0.0.1:{h2o_port}"
            rates = {}
            for transport in args.transports.split(","):
                count = args.jobs if transport == "pycurl" else args.httpx_jobs
                rates[transport] = sender_rate(pki, url, count, directory, args.limit_s,
                                               transport=transport)
        finally:
            h2o.terminate()
            h2o.wait(10)
        shown = " | ".join(f"{name} {rate:,.0f} pushes/s" for name, rate in rates.items())
        best = rates.get(DEFAULT_TRANSPORT, 0.0)
        print(f"(b) h2o: {shown} | default {DEFAULT_TRANSPORT}: bar >= 10,000 pushes/s: "
              f"{'met' if best >= 10_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
