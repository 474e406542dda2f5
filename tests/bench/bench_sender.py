"""Sender throughput, Kafka in → outcomes out, beside its peers from the same run.

Usage: ``.venv/bin/python tests/bench/bench_sender.py [--jobs N] [--node-apn N] [--aioapns N]
[--h2load N] [--no-h2o] [--rounds R] [--bar]`` (broker: ``MDMPUSH_TEST_BOOTSTRAP``, default
127.0.0.1:9092).

(a) One APNs simulator in its own process (``sim_arrivals.py``: it records when each push
    arrived), and one after another against it:
    - the sender (``python -m services.sender``, another process) over N pre-produced jobs;
    - @parse/node-apn (the npm client most used for APNs; pinned in ``node_apn/package.json``,
      installed by this script with ``npm install --prefix`` into ~/.cache/mdmpush/node-apn),
      driven by ``node_apn/push.js`` with the sender's connection count (one connection per
      certificate and lane) and stream window (``bulk_in_flight_per_certificate``);
    - aioapns (Python, asyncio);
    - h2load (C, nghttp2) with the same connection count and window, distinct tokens: what the
      simulator takes from one connection, the ceiling every client here is under.
    Every rate is counted at the simulator: (arrivals - 1) / (last - first arrival) within the
    phase, so connection set-up is excluded and nothing a client stamps itself is trusted. The
    simulator accepts connections without a client certificate (h2load has none); every other
    client presents one, which is verified. Bars: sender >= 1.0x node-apn, sender >= 2x aioapns.
    ``--rounds R`` runs R sender / node-apn pairs in alternating order (the shared machine's load
    swings within seconds: one pair's ratio has been seen anywhere from 0.6x to 2.4x for the same
    code); the node-apn bar is then the median of the pairs' ratios.
(b) h2o (mruby echoing apns-id, started by bench_transports.start_h2o), an endpoint that is not
    the bottleneck; the sender with each transport, rated on its outcome records. Bar: ≥ 10,000
    pushes/s with the default transport.

A sender run that timed out (``--limit-s``) or whose outcomes are not all SENT is MISSED, never
a rate; ``--bar`` makes the exit status 1 when any bar is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

# Run as a script (python tests/bench/bench_sender.py): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sender.apns.pool import DEFAULT_TRANSPORT
from services.sender.settings import SenderSettings
from tests.bench.bench_sim_ceiling import h2load_rate
from tests.bench.bench_transports import start_h2o
from tests.bench.sim_arrivals import Arrivals, arrivals_sim, rate
from tests.support.bench_env import bench_workspace, fresh_kafka, sender_process
from tests.support.cpu import cpu_seconds
from tests.support.sender_harness import SERDE, Pki, Reader, job, produce_jobs, sender_settings

NODE_APN = Path(__file__).resolve().parent / "node_apn"
NODE_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mdmpush/node-apn"


@dataclass
class SenderRun:
    """What one sender run did: outcomes read, their states, and whether it finished in time."""

    count: int
    outcomes: int
    states: Counter[str]
    outcome_rate: float
    started: float
    ended: float
    #: CPU (user + system, all threads) per push after the first outcome; 0 if none.
    cpu_us_per_push: float

    @property
    def complete(self) -> bool:
        """Every job answered SENT within the time limit: only then is a rate a result."""
        return self.outcomes == self.count and self.states.get("SENT", 0) == self.count

    def problem(self) -> str:
        if self.outcomes < self.count:
            return f"timed out: {self.outcomes:,}/{self.count:,} outcomes"
        others = {s: n for s, n in self.states.items() if s != "SENT"}
        return f"not all SENT: {others}"


def sender_run(pki: Pki, url: str, count: int, directory: Path, limit_s: float,
               **overrides: object) -> SenderRun:
    """One sender process over `count` pre-produced jobs, until every outcome is read."""
    kafka, topics = fresh_kafka()
    produce_jobs(kafka, topics.jobs_bulk, (job(pki.topics[0], i) for i in range(count)))
    settings = sender_settings(pki, url, **overrides)
    started = time.time()
    with closing(Reader(kafka, topics.outcomes, decode=False)) as reader:
        cpu_start, per_push = None, 0.0
        with sender_process(settings, kafka, directory / "sender.log") as process:
            deadline = time.monotonic() + limit_s
            while len(reader.records) < count and time.monotonic() < deadline:
                reader.poll(0.2)
                if cpu_start is None and reader.records:
                    cpu_start, counted_from = cpu_seconds(process.pid), len(reader.records)
            cpu_end = cpu_seconds(process.pid)
            if (cpu_start is not None and cpu_end is not None
                    and len(reader.records) > counted_from):
                # CPU per push does not depend on what else the machine runs: 1 s / it is the
                # rate one free core would give.
                per_push = (cpu_end - cpu_start) / (len(reader.records) - counted_from) * 1e6
    ended = time.time()
    # Decoded after the run, so that decoding does not take CPU from the sender.
    states = Counter(SERDE.decode(m.value())[1]["state"] for m in reader.records)
    stamps = sorted(m.timestamp()[1] for m in reader.records)
    outcome_rate = (
        (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1000)
        if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
    )
    return SenderRun(count, len(reader.records), states, outcome_rate, started, ended, per_push)


def install_node_apn() -> Path:
    """@parse/node-apn at the version pinned in node_apn/package.json, installed once into the
    user's cache (npm, from the registry npm is configured with); returns the prefix."""
    wanted = json.loads((NODE_APN / "package.json").read_text())["dependencies"]["@parse/node-apn"]
    installed = NODE_CACHE / "node_modules/@parse/node-apn/package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        return NODE_CACHE
    if shutil.which("npm") is None or shutil.which("node") is None:
        sys.exit("node and npm are needed for the node-apn peer (apt-get install -y nodejs npm)")
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copy(NODE_APN / "package.json", NODE_CACHE / "package.json")
    subprocess.run(["npm", "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund"],
                   check=True, timeout=300, stdout=subprocess.DEVNULL)
    return NODE_CACHE


def node_apn_run(pki: Pki, port: int, count: int, window: int, connections: int,
                 limit_s: float) -> tuple[float, float, dict[str, object]]:
    """node-apn sends `count` pushes; returns the phase's wall-clock bounds and its own report."""
    topic = pki.topics[0]
    options = {
        "modules": str(install_node_apn()), "port": port, "topic": topic, "count": count,
        "window": window, "clients": connections,
        "cert": str(pki.cert_dir / f"{topic}.pem"), "key": str(pki.cert_dir / f"{topic}.key"),
        "ca": str(pki.pki.ca.cert_path),
    }
    started = time.time()
    done = subprocess.run(["node", str(NODE_APN / "push.js"), json.dumps(options)],
                          capture_output=True, text=True, timeout=limit_s)
    ended = time.time()
    if done.returncode != 0:
        sys.exit(f"node-apn failed:\n{done.stderr[-2000:]}")
    return started, ended, json.loads(done.stdout.strip().splitlines()[-1])


def aioapns_run(pki: Pki, port: int, count: int, concurrency: int = 1000) -> int:
    """aioapns sends 200 warm-up pushes, then `count`; returns how many were not successful."""
    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsDevelopmentClientProtocol

    cert_dir = pki.cert_dir
    topic = pki.topics[0]

    async def run() -> int:
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

        await asyncio.gather(*(one(n) for n in range(count + 200)))
        client.pool.close()
        return count + 200 - ok

    return asyncio.run(run())


def verdict(met: bool) -> str:
    return "MET" if met else "MISSED"


def simulator_phase(args: argparse.Namespace, directory: Path, pki: Pki) -> list[bool]:
    """(a): every client against one recording simulator; returns the bars, met or not."""
    defaults = SenderSettings()
    window, connections = defaults.bulk_in_flight_per_certificate, 1
    phases: dict[str, tuple[float, float, int]] = {}  # name -> (start, end, pushes expected)
    notes: list[str] = []
    seen: dict[str, object] = {}
    with arrivals_sim(pki.pki.directory, directory, client_auth="optional",
                      max_concurrent_streams=defaults.max_concurrent_streams) as (port, result):
        url = f"https://127.0.0.1:{port}"
        run = sender_run(pki, url, args.jobs, directory, args.limit_s)
        phases["sender"] = (run.started, run.ended, args.jobs)
        for floor, share, linger in args.windows:  # the same sender, another window / linger
            with linger_ms(linger):
                other = sender_run(pki, url, args.jobs, directory, args.limit_s,
                                   unrecorded_min=floor, unrecorded_share=share)
            name = f"sender w={floor}:{share:g}" + (f" linger={linger}" if linger else "")
            phases[name] = (other.started, other.ended, args.jobs)
            if not other.complete:
                notes.append(f"{name}: {other.problem()}")
        if not run.complete:
            notes.append(f"sender: {run.problem()}")
        if not args.no_node:
            start, end, seen = node_apn_run(pki, port, args.node_apn, window, connections,
                                            args.limit_s)
            phases["node-apn"] = (start, end, args.node_apn)
            if seen["failed"]:
                notes.append(f"node-apn: {seen['failed']} failed {seen['reasons']}")
        start = time.time()
        failed = aioapns_run(pki, port, args.aioapns)
        phases["aioapns"] = (start, time.time(), args.aioapns + 200)
        if failed:
            notes.append(f"aioapns: {failed} pushes not successful")
        if args.h2load:
            start = time.time()
            h2load_rate(port, pki.topics[0], args.h2load, connections, window, directory,
                        distinct_tokens=True)
            phases["h2load"] = (start, time.time(), args.h2load)
        complete = [run.complete]
        for again in range(2, args.rounds + 1 if not args.no_node else 0):
            # More sender / node-apn pairs, in alternating order: the machine's load swings
            # within seconds, and one pair's ratio swings with it.
            for client in ("node-apn", "sender") if again % 2 == 0 else ("sender", "node-apn"):
                name = f"{client} #{again}"
                if client == "sender":
                    other = sender_run(pki, url, args.jobs, directory, args.limit_s)
                    phases[name] = (other.started, other.ended, args.jobs)
                    complete.append(other.complete)
                    if not other.complete:
                        notes.append(f"{name}: {other.problem()}")
                else:
                    start, end, _ = node_apn_run(pki, port, args.node_apn, window, connections,
                                                 args.limit_s)
                    phases[name] = (start, end, args.node_apn)
    arrivals: Arrivals = result[0]
    rates: dict[str, float] = {}
    print(f"(a) simulator, {connections} connection, {window} streams in flight "
          f"(the sender's bulk_in_flight_per_certificate); counted at the simulator:")
    for name, (start, end, expected) in phases.items():
        times = arrivals.between(start, end)
        rates[name] = rate(times)
        counted = "" if len(times) == expected else f" — COUNTED {len(times):,} of {expected:,}"
        versus = (f" = {rates[name] / rates['sender']:.2f}x the default sender"
                  if name.startswith("sender w=") and rates["sender"] else "")
        print(f"    {name:>8}: {rates[name]:>9,.0f} pushes/s ({len(times):,} arrivals){counted}"
              f"{versus}")
        if len(times) != expected:
            notes.append(f"{name}: the simulator counted {len(times):,} of {expected:,} pushes")
    print(f"    sender by its own outcome stamps: {run.outcome_rate:,.0f} pushes/s "
          f"({run.outcomes:,} outcomes, {dict(run.states)})")
    node_cpu = float(str(seen["cpuUsPerPush"])) if not args.no_node else 0.0
    print(f"    CPU per push (machine load aside; one free core = 1e6 / it): sender "
          f"{run.cpu_us_per_push:.0f} us (Kafka in and out included)"
          + (f", node-apn {node_cpu:.0f} us; node-apn / sender "
             f"{node_cpu / run.cpu_us_per_push:.2f}x" if node_cpu and run.cpu_us_per_push else ""))
    bars = []
    for peer, bar in (("node-apn", 1.0), ("aioapns", 2.0)):
        if peer not in rates or not rates[peer]:
            continue
        ratio = rates["sender"] / rates[peer]
        met = run.complete and ratio >= bar
        shown = f"{ratio:.2f}x" if run.complete else f"(rate void: {run.problem()})"
        if peer == "node-apn" and len(complete) > 1:  # the bar is the rounds' median
            ratios = [ratio] + [rates[f"sender #{n}"] / rates[f"node-apn #{n}"]
                                for n in range(2, len(complete) + 1)]
            median = statistics.median(ratios)
            met = all(complete) and median >= bar
            shown = (f"{', '.join(f'{r:.2f}x' for r in ratios)} in {len(ratios)} rounds, median "
                     f"{median:.2f}x" if all(complete) else "(rate void: a sender run timed out "
                     "or not all SENT)")
        print(f"    sender / {peer}: {shown} (bar >= {bar:.1f}x: {verdict(met)})")
        bars.append(met)
    if rates.get("h2load"):
        print(f"    sender / h2load (simulator ceiling for this window): "
              f"{rates['sender'] / rates['h2load']:.2f}x; node-apn / h2load: "
              f"{rates.get('node-apn', 0.0) / rates['h2load']:.2f}x")
    if rates.get("node-apn") and node_cpu and run.cpu_us_per_push:
        # What 1.5x node-apn takes: the sender's CPU per push at two thirds of node-apn's, and
        # an endpoint that takes 1.5x node-apn's rate over one connection.
        target = 1.5 * rates["node-apn"]
        ceiling = (f" = {target / rates['h2load']:.2f}x what h2load gets from this simulator"
                   if rates.get("h2load") else "")
        print(f"    to reach 1.5x node-apn: sender CPU <= {node_cpu / 1.5:.0f} us/push (now "
              f"{run.cpu_us_per_push:.0f}); {target:,.0f} pushes/s on one connection{ceiling}")
    for note in notes:
        print(f"    ! {note}")
    return bars


def h2o_phase(args: argparse.Namespace, directory: Path, pki: Pki) -> bool:
    """(b): the sender with each transport, and node-apn, against h2o; returns whether the bar
    is met. h2o keeps no counters: rates here are the sender's outcome stamps and node-apn's
    own clock, each client with the same connection count and window as in (a)."""
    h2o, h2o_port = start_h2o(directory, pki.pki.server.cert_path, pki.pki.server.key_path,
                              threads=1)
    try:
        url = f"https://127.0.0.1:{h2o_port}"
        runs = {}
        for transport in args.transports.split(","):
            count = args.jobs if transport == "pycurl" else args.httpx_jobs
            runs[transport] = sender_run(pki, url, count, directory, args.limit_s,
                                         transport=transport)
        node = None
        if not args.no_node:
            _, _, node = node_apn_run(pki, h2o_port, args.node_apn,
                                      SenderSettings().bulk_in_flight_per_certificate, 1,
                                      args.limit_s)
    finally:
        h2o.terminate()
        h2o.wait(10)
    shown = " | ".join(
        f"{name} {run.outcome_rate:,.0f} pushes/s" if run.complete
        else f"{name} MISSED ({run.problem()})"
        for name, run in runs.items()
    )
    best = runs.get(DEFAULT_TRANSPORT)
    met = best is not None and best.complete and best.outcome_rate >= 10_000
    print(f"(b) h2o, rated on outcome records: {shown} | default {DEFAULT_TRANSPORT}: bar >= "
          f"10,000 pushes/s: {verdict(met)}")
    if node is not None and best is not None:
        node_rate = (int(str(node["sent"])) / float(str(node["elapsed"]))
                     if not node["failed"] else 0.0)
        shown = (f"{node_rate:,.0f} pushes/s, {float(str(node['cpuUsPerPush'])):.0f} us CPU/push"
                 if node_rate else f"MISSED: {node['failed']} failed {node['reasons']}")
        ratio = (f"; sender / node-apn {best.outcome_rate / node_rate:.2f}x"
                 if node_rate and best.complete else "")
        print(f"    node-apn against h2o (its own clock): {shown}; sender CPU "
              f"{best.cpu_us_per_push:.0f} us/push{ratio}")
    return met


def windows(value: str) -> list[tuple[int, float, str]]:
    """--windows: "20:0.01,0:0:1" -> [(20, 0.01, ""), (0, 0.0, "1")]."""
    out = []
    for item in value.split(","):
        floor, share, *linger = item.split(":")
        out.append((int(floor), float(share), linger[0] if linger else ""))
    return out


@contextmanager
def linger_ms(value: str) -> Iterator[None]:
    """MDMPUSH_KAFKA_LINGER_MS for the sender processes started in the block ("": unchanged)."""
    before = os.environ.get("MDMPUSH_KAFKA_LINGER_MS")
    if value:
        os.environ["MDMPUSH_KAFKA_LINGER_MS"] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MDMPUSH_KAFKA_LINGER_MS", None)
        else:
            os.environ["MDMPUSH_KAFKA_LINGER_MS"] = before


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per sender run")
    parser.add_argument("--node-apn", type=int, default=100_000, help="node-apn pushes")
    parser.add_argument("--aioapns", type=int, default=20_000, help="aioapns pushes")
    parser.add_argument("--h2load", type=int, default=100_000, help="h2load pushes; 0: none")
    parser.add_argument("--httpx-jobs", type=int, default=5_000)
    parser.add_argument("--limit-s", type=float, default=120.0)
    parser.add_argument("--no-h2o", action="store_true")
    parser.add_argument("--no-sim", action="store_true", help="skip (a): h2o only")
    parser.add_argument("--no-node", action="store_true", help="(a) without node-apn")
    parser.add_argument("--transports", default="pycurl,httpx", help="for (b)")
    parser.add_argument("--bar", action="store_true", help="exit 1 when a bar is missed")
    parser.add_argument("--rounds", type=int, default=1,
                        help="(a) sender / node-apn pairs, alternating order; the node-apn bar "
                             "is their ratios' median")
    parser.add_argument("--windows", type=windows, default=[],
                        help="(a) also runs the sender with each unrecorded window, "
                             "comma-separated MIN:SHARE[:LINGER_MS] (MDMPUSH_SENDER_UNRECORDED_"
                             "MIN, _SHARE, MDMPUSH_KAFKA_LINGER_MS; 0:0 = no window), and prints "
                             "its ratio to the default's")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; jobs per sender run: {args.jobs:,}")
    bars: list[bool] = []
    with bench_workspace("sender", certificates=1) as (directory, pki):
        if not args.no_sim:
            bars += simulator_phase(args, directory, pki)
        if not args.no_h2o:
            bars.append(h2o_phase(args, directory, pki))
    return 1 if args.bar and not all(bars) else 0


if __name__ == "__main__":
    sys.exit(main())
