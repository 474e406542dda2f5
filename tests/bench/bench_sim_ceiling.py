"""Ceiling of the APNs simulator on one core, measured by h2load; aioapns against it for scale.

    .venv/bin/python tests/bench/bench_sim_ceiling.py [--requests 200000] [--aioapns-requests 20000]

The simulator runs in its own process pinned to core 0 (``taskset``); the load generators run on
core 1. h2load (Debian ``nghttp2-client``) cannot present a client certificate, so for this
measurement only the simulator runs with ``--client-auth optional`` (a certificate is still
verified when one is presented, as aioapns does). h2load runs twice: with one URL and token,
where every header block after the first is a hit in the simulator's whole-block HPACK cache (a
ceiling no real sender sees), and with a distinct device token per request, as a sender's
requests are. The bar (README, "Latest figures") is ≥ 5,000 pushes/s with distinct tokens; the
exit status is 1 below it. The aioapns figure is the baseline the sender
is compared with. The simulator's CPU time per push during the h2load run is printed too: on a
shared machine it varies far less than the wall-clock rate.

Not a pytest test (pytest collects ``test_*`` only); numbers go to the README, never into asserts
of timed unit tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsDevelopmentClientProtocol

from services.sim.apns.certs import PushCertFiles, SimPki, make_pki
from tests.support.cpu import cpu_seconds

BAR = 5000.0
TOKEN = "ab" * 32


def pin(cores: str | None) -> list[str]:
    """A ``taskset`` prefix when pinning is possible and asked for."""
    if cores is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", cores]


def start_sim(
    certs: Path, core: str | None, stats_file: Path
) -> tuple[subprocess.Popen[bytes], int]:
    ready = certs / "ready"
    cmd = [
        *pin(core),
        sys.executable,
        "-m",
        "services.sim.apns",
        "--certs",
        str(certs),
        "--port",
        "0",
        "--client-auth",
        "optional",
        "--ready-file",
        str(ready),
        "--stats-file",
        str(stats_file),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            return proc, int(ready.read_text().split()[2])
        if proc.poll() is not None:
            raise SystemExit(f"simulator exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("simulator did not start within 20 s")


def token_of(n: int) -> str:
    """The n-th distinct device token (64 hex digits)."""
    return f"{n:064x}"


def h2load_rate(
    port: int, topic: str, requests: int, clients: int, streams: int, workdir: Path,
    distinct_tokens: bool, cores: str | None = None,
) -> float:
    """Pushes/s h2load reaches against the simulator; every request must be answered 2xx.

    With ``distinct_tokens`` every request of a connection has its own device token (an ``-i``
    file of URIs): each header block then differs, as a real sender's do, and the simulator's
    whole-block HPACK cache never hits. With one URL (``distinct_tokens=False``) every block of a
    connection after the first is a cache hit: a ceiling no real sender sees.
    """
    h2load = shutil.which("h2load")
    if h2load is None:
        raise SystemExit("h2load not found: apt-get install -y nghttp2-client")
    body = workdir / "body.json"
    body.write_bytes(b'{"mdm":"5d1c4f6e-push-magic"}')
    base = f"https://127.0.0.1:{port}/3/device/"
    if distinct_tokens:
        uris = workdir / "uris.txt"
        per_client = -(-requests // clients)
        uris.write_text("".join(f"{base}{token_of(n)}\n" for n in range(per_client)))
        target = ["-i", str(uris)]
    else:
        target = [base + TOKEN]
    cmd = [
        *pin(cores), h2load, "-n", str(requests), "-c", str(clients), "-m", str(streams),
        "-d", str(body), "-H", f"apns-topic: {topic}", "-H", "apns-push-type: mdm",
        "-H", "apns-priority: 10", "-H", "apns-expiration: 0", *target,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if finished is None or codes is None:
        raise SystemExit(f"cannot parse h2load output:\n{out}")
    ok = int(codes.group(1))
    if ok != requests:
        raise SystemExit(f"h2load: only {ok}/{requests} answered 2xx:\n{out}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return ok / seconds


async def aioapns_rate(port: int, pki: SimPki, cert: PushCertFiles, n: int, conc: int) -> float:
    client = APNs(
        client_cert=str(cert.combined_path),
        topic=cert.topic,
        use_sandbox=True,
        ssl_context=ssl.create_default_context(cafile=str(pki.ca.cert_path)),
    )
    client.pool.protocol_class = type(
        "SimulatorProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "127.0.0.1", "APNS_PORT": port},
    )
    sem = asyncio.Semaphore(conc)
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        async with sem:
            result = await client.send_notification(
                NotificationRequest(
                    device_token=token_of(n),
                    message={"mdm": "5d1c4f6e-push-magic"},
                    push_type=PushType.MDM,
                    time_to_live=0,
                    priority=10,
                )
            )
            failures += not result.is_successful

    await asyncio.wait_for(one(n), 10)  # connect before timing
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 600)
    elapsed = time.perf_counter() - t0
    client.pool.close()
    if failures:
        raise SystemExit(f"aioapns: {failures} pushes failed")
    return n / elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=200_000, help="h2load -n")
    p.add_argument("--clients", type=int, default=4, help="h2load -c")
    p.add_argument("--streams", type=int, default=100, help="h2load -m")
    p.add_argument("--aioapns-requests", type=int, default=20_000)
    p.add_argument("--aioapns-concurrency", type=int, default=1000)
    p.add_argument("--sim-core", default="0", help="taskset core list for the simulator")
    p.add_argument("--client-cores", default="1", help="taskset core list for the load")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args()
    if args.no_pin:
        args.sim_core = args.client_cores = None
    elif args.client_cores and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {int(c) for c in args.client_cores.split(",")})

    with tempfile.TemporaryDirectory(prefix="apns-bench-") as tmp:
        work = Path(tmp)
        pki = make_pki(work)
        cert = pki.issue()
        stats_file = work / "stats.json"
        proc, port = start_sim(work, args.sim_core, stats_file)
        rates: dict[bool, float] = {}
        cpu: dict[bool, float | None] = {}
        try:
            for distinct in (False, True):
                cpu_before = cpu_seconds(proc.pid)
                rates[distinct] = h2load_rate(
                    port, cert.topic, args.requests, args.clients, args.streams, work,
                    distinct_tokens=distinct, cores=args.client_cores,
                )
                cpu_after = cpu_seconds(proc.pid)
                cpu[distinct] = (
                    (cpu_after - cpu_before) / args.requests
                    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before
                    else None
                )
            aioapns = asyncio.run(
                aioapns_rate(port, pki, cert, args.aioapns_requests, args.aioapns_concurrency)
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stats = json.loads(stats_file.read_text())

    expected = 2 * args.requests + args.aioapns_requests + 1
    met = rates[True] >= BAR
    print(f"simulator ceiling (h2load -c {args.clients} -m {args.streams}, one core):")
    for distinct in (False, True):
        # CPU per push is robust on a shared machine, where the wall-clock rate depends on
        # the neighbours.
        per_push = cpu[distinct]
        shown = (
            f"; simulator CPU {per_push * 1e6:.1f} µs/push (≈ {1 / per_push:,.0f} pushes/s per "
            f"busy core)" if per_push else ""
        )
        label = "distinct token per request" if distinct else "one URL and token (HPACK cache)"
        print(f"  {label:>32}: {rates[distinct]:>9,.0f} pushes/s{shown}")
    print(
        f"  distinct / one token: {rates[True] / rates[False]:.2f}x; bar ≥ {BAR:,.0f} pushes/s "
        f"on distinct tokens: {'MET' if met else 'MISSED'}"
    )
    print(
        f"aioapns against the simulator (distinct tokens, concurrency "
        f"{args.aioapns_concurrency}): {aioapns:,.0f} pushes/s"
    )
    print(f"simulator counted {stats['accepted']:,} accepted pushes (expected {expected:,})")
    if stats["accepted"] != expected:
        print("MISMATCH between answers and the simulator's counters")
        return 1
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
