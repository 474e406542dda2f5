"""``python -m services.sim.apns``: run the APNs simulator as its own process.

For tests, the demo and benchmarks that need the simulator in another process (or pinned to one
core). The certificate directory is created when missing (``ca.pem``/``ca.key``,
``server.pem``/``server.key``); ``--issue-topic`` writes push certificates signed by that CA.
Once listening, one line ``READY <host> <port>`` goes to stdout (and to ``--ready-file``), so the
parent can use ``--port 0``. SIGTERM/SIGINT stop it cleanly; ``--stats-file`` then receives the
final counters as JSON. Store-and-forward runs on the pipeline clock from ``MDMPUSH_CLOCK_*``
(:class:`services.common.clock.Clock`), like every other process of a compressed-time run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from services.common.clock import Clock
from services.common.logging_setup import configure_logging
from services.sim.apns.certs import (
    issue_push_certificate,
    load_ca,
    make_ca,
    make_server_cert,
)
from services.sim.apns.faults import Faults
from services.sim.apns.server import ApnsSimulator, SimulatorConfig

log = logging.getLogger("services.sim.apns")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.sim.apns", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "localhost", "::1"])
    p.add_argument("--port", type=int, default=0, help="0: any free port (see READY line)")
    p.add_argument("--certs", type=Path, required=True, help="directory of ca.pem, server.pem…")
    p.add_argument(
        "--issue-topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="also issue a push certificate for TOPIC into --certs (repeatable)",
    )
    p.add_argument(
        "--client-auth",
        choices=["required", "optional"],
        default="required",
        help="'optional' only for load generators without client certificates",
    )
    p.add_argument("--max-concurrent-streams", type=int, default=1000)
    p.add_argument(
        "--token-rate-limit",
        type=int,
        default=None,
        help="429 TooManyRequests above this many pushes per token per window",
    )
    p.add_argument("--token-rate-window", type=float, default=1.0, help="seconds")
    p.add_argument("--reject-unknown-tokens", action="store_true")
    p.add_argument("--require-push-type", action="store_true")
    p.add_argument("--ready-file", type=Path, default=None)
    p.add_argument("--stats-file", type=Path, default=None)
    p.add_argument("--log-level", default="WARNING")
    Faults.add_arguments(p)
    return p.parse_args(argv)


def ensure_certs(directory: Path, topics: list[str]) -> None:
    """Create the CA and server certificate once; issue the requested push certificates."""
    ca = load_ca(directory) if (directory / "ca.pem").exists() else make_ca(directory)
    if not (directory / "server.pem").exists():
        make_server_cert(ca, directory)
    for topic in topics:
        issue_push_certificate(ca, topic, directory)


async def serve(args: argparse.Namespace) -> None:
    ensure_certs(args.certs, args.issue_topic)
    config = SimulatorConfig(
        server_cert=args.certs / "server.pem",
        server_key=args.certs / "server.key",
        ca_cert=args.certs / "ca.pem",
        host=args.host,
        port=args.port,
        client_auth=args.client_auth,
        max_concurrent_streams=args.max_concurrent_streams,
        token_rate_limit=args.token_rate_limit,
        token_rate_window_s=args.token_rate_window,
        reject_unknown_tokens=args.reject_unknown_tokens,
        require_push_type=args.require_push_type,
        clock=Clock.from_settings(),
    )
    sim = ApnsSimulator(config, faults=Faults.from_arguments(args))
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = f"READY {config.host} {sim.port}\n"
    if args.ready_file is not None:
        args.ready_file.write_text(ready)
    sys.stdout.write(ready)
    sys.stdout.flush()
    await stop.wait()
    await sim.stop()
    if args.stats_file is not None:
        snap = asdict(sim.snapshot())
        snap["store"] = {
            "stored": sim.store.stored,
            "forwarded": sim.store.forwarded,
            "expired": sim.store.expired,
        }
        args.stats_file.write_text(json.dumps(snap, default=str))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging("apns-simulator")
    logging.getLogger().setLevel(args.log_level.upper())  # the flag wins: a test tool
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
