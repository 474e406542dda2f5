"""`mdmpush kafka up | down | status`: a real local Kafka 2.3.0 for tests and the demo."""

from __future__ import annotations

import argparse
import time
from typing import Any

from services.devstack.kafka import LocalKafka


def register(sub: Any) -> None:
    p = sub.add_parser("kafka", help="install, start, stop the local Kafka broker")
    p.add_argument("action", choices=["up", "down", "status", "install"])
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kafka = LocalKafka()
    t0 = time.monotonic()
    if args.action == "install":
        install = kafka.install()
        print(f"Kafka installed at {install.home} ({time.monotonic() - t0:.1f}s)")
        return 0
    if args.action == "up":
        status = kafka.up(args.timeout)
        print(f"Kafka ready at {status.bootstrap} ({time.monotonic() - t0:.1f}s; "
              f"zookeeper pid {status.zookeeper_pid}, broker pid {status.broker_pid})")
        return 0
    if args.action == "down":
        kafka.down()
        print("Kafka stopped")
        return 0
    status = kafka.status()
    print(f"zookeeper: {_describe(status.zookeeper_pid)}")
    ready = f" (ready at {status.bootstrap})" if status.ready else ""
    print(f"broker:    {_describe(status.broker_pid)}{ready}")
    return 0 if status.ready else 1


def _describe(pid: int | None) -> str:
    return f"running pid {pid}" if pid else "stopped"
