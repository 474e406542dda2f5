"""`mdmpush up [--simulate] [--certs DIR] [--bootstrap HOST:PORT]`: the pipeline on one host.

Gateway, fan-out, sender and correlator run as supervised processes on the local Kafka (started
when needed) or on the given cluster; `--simulate` adds the APNs simulator and points the sender
at it, otherwise the sender pushes to Apple (production unless MDMPUSH_SENDER_ENVIRONMENT says
sandbox) with the certificates in `--certs`. A crashed service restarts with backoff; Ctrl-C or
SIGTERM stops everything (SIGTERM, then SIGKILL after `--grace` seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.common.logging_setup import configure_logging
from services.devstack.paths import state_dir
from services.devstack.up.stack import Stack, UpOptions


def register(sub: Any) -> None:
    p = sub.add_parser("up", help="run gateway, fan-out, sender and correlator on this host",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    apns = p.add_mutually_exclusive_group(required=True)
    apns.add_argument("--simulate", action="store_true",
                      help="push to the APNs simulator instead of Apple")
    apns.add_argument("--certs", type=Path, metavar="DIR",
                      help="push certificates for real APNs: <topic>.pem + <topic>.key")
    p.add_argument("--topic", action="append", default=[], metavar="TOPIC",
                   help="with --simulate: a push topic to issue a certificate for (repeatable)")
    p.add_argument("--bootstrap", metavar="HOST:PORT",
                   help="an existing Kafka cluster (default: MDMPUSH_KAFKA_BOOTSTRAP_SERVERS "
                        "if set, else the local one, started if needed)")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="logs, credentials, certificates (default: <state>/up)")
    p.add_argument("--partitions", type=int, default=None,
                   help="partitions of every topic created (default: the catalogue's)")
    p.add_argument("--replication-factor", type=int, default=1)
    p.add_argument("--grace", type=float, default=30.0,
                   help="seconds a service gets to stop before SIGKILL")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging("up")
    options = UpOptions(
        state_dir=(args.state_dir or state_dir() / "up").resolve(),
        bootstrap=args.bootstrap, simulate=args.simulate, certs=args.certs,
        topics=tuple(args.topic), partitions=args.partitions,
        replication_factor=args.replication_factor, grace_s=args.grace,
    )
    return Stack(options, say=lambda line: print(line, flush=True)).run()
