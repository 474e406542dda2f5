"""Pushes per second of each APNs transport, side by side, against a server that is not the limit.

Usage: ``.venv/bin/python tests/bench/bench_transports.py [--pushes N] [--runs R]``

The endpoint is h2o (Debian package ``h2o`` 2.2.5, built with mruby), a C HTTP/2 server that
answers > 100,000 requests/s on one core here: a few lines of mruby answer 200 and echo
``apns-id``, over TLS with ALPN h2, like APNs (h2o 2.2 cannot request a client certificate; the
transports still load and offer theirs). Each transport uses one connection in this one process,
driven the way the sender drives it: submit while fewer than ``--window`` are in flight, poll.
Connection set-up is excluded (a warm-up batch runs first). Prints pushes/s per transport and
the ratio. Not collected by pytest (no ``test_`` prefix); loops are bounded by push counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from services.devstack.procs import free_port
from services.sender.apns.pool import DEFAULT_TRANSPORT, TRANSPORTS
from services.sender.apns.transport import TransportConfig
from services.sender.apns.types import ApnsRequest
from services.sim.apns.certs import issue_push_certificate, make_ca, make_server_cert, mdm_topic

H2O_CONFIG = """\
{user}
listen:
  host: 127.0.0.1
  port: {port}
  ssl:
    certificate-file: {cert}
    key-file: {key}
    ocsp-update-interval: 0
num-threads: {threads}
http2-max-concurrent-requests-per-connection: 1000
hosts:
  default:
    paths:
      /3/device:
        mruby.handler: |
          Proc.new do |env|
            [200, {{"apns-id" => env["HTTP_APNS_ID"] || ""}}, []]
          end
"""
TOKEN = "a" * 64
PAYLOAD = b'{"mdm":"00000000-1111-2222-3333-444444444444"}'


def start_h2o(
    directory: Path, cert: Path, key: Path, threads: int
) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("h2o")
    if binary is None:
        sys.exit("h2o not found: apt-get install -y h2o (Debian h2o 2.2.5 with mruby)")
    port = free_port()
    config = directory / "h2o.conf"
    # h2o started as root drops to "nobody", who cannot read the 0600 server key.
    user = "user: root" if os.geteuid() == 0 else ""
    config.write_text(H2O_CONFIG.format(user=user, port=port, cert=cert, key=key, threads=threads))
    log = (directory / "h2o.log").open("wb")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
    for _ in range(100):  # bounded: up to 5 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit(f"h2o did not start; see {directory / 'h2o.log'}")


def requests(count: int, topic: str) -> list[ApnsRequest]:
    return [
        ApnsRequest(str(i), TOKEN, topic, PAYLOAD, str(uuid.uuid4()), expiration=0)
        for i in range(count)
    ]


def measure(name: str, config: TransportConfig, count: int, window: int, topic: str) -> float:
    """Pushes/s for ``count`` pushes on one connection (after a warm-up on the same one)."""
    transport = TRANSPORTS[name](config)
    try:
        for batch, timed in (
            (requests(min(count, 1000), topic), False),
            (requests(count, topic), True),
        ):
            started = time.perf_counter()
            submitted = answered = 0
            deadline = time.monotonic() + 120
            while answered < len(batch) and time.monotonic() < deadline:
                while submitted < len(batch) and transport.in_flight < window:
                    transport.submit(batch[submitted])
                    submitted += 1
                for answer in transport.poll(0.05):
                    if answer.status != 200:
                        sys.exit(f"{name}: unexpected answer {answer}")
                    answered += 1
            if answered < len(batch):
                sys.exit(f"{name}: only {answered}/{len(batch)} answered within 120 s")
            if timed:
                return count / (time.perf_counter() - started)
    finally:
        transport.close()
    raise AssertionError("unreachable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=100_000, help="pycurl pushes per run")
    parser.add_argument("--httpx-pushes", type=int, default=5_000, help="httpx pushes per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000, help="max_concurrent_streams")
    parser.add_argument("--window", type=int, default=2000, help="caller's in-flight bound")
    parser.add_argument("--server-threads", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-transports-") as tmp:
        directory = Path(tmp)
        ca = make_ca(directory)
        server = make_server_cert(ca, directory)
        push = issue_push_certificate(ca, mdm_topic(), directory, name="client")
        process, port = start_h2o(directory, server.cert_path, server.key_path, args.server_threads)
        try:
            config = TransportConfig(
                base_url=f"https://127.0.0.1:{port}",
                cert_path=push.cert_path,
                key_path=push.key_path,
                ca_path=ca.cert_path,
                max_concurrent_streams=args.streams,
            )
            counts = {"pycurl": args.pushes, "httpx": args.httpx_pushes}
            results: dict[str, float] = {}
            print(
                f"h2o 127.0.0.1:{port}, one connection per transport, streams={args.streams}, "
                f"window={args.window}, {os.cpu_count()} CPUs"
            )
            for name in ("pycurl", "httpx"):
                runs = [
                    measure(name, config, counts[name], args.window, push.topic)
                    for _ in range(args.runs)
                ]
                results[name] = statistics.median(runs)
                shown = ", ".join(f"{r:,.0f}" for r in runs)
                print(
                    f"{name:>7}: median {results[name]:>9,.0f} pushes/s  (runs: {shown}; "
                    f"{counts[name]:,} pushes each)"
                )
            print(f"  ratio: pycurl / httpx = {results['pycurl'] / results['httpx']:.1f}x")
            fastest = max(results, key=lambda n: results[n])
            verdict = "met" if results[DEFAULT_TRANSPORT] >= 10_000 else "MISSED"
            print(
                f"default transport: {DEFAULT_TRANSPORT} (fastest here: {fastest}); "
                f"bar >= 10,000 pushes/s: {verdict}"
            )
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
