"""`mdmpush`: run the local stack, manage topics, publish requests, run the demo.

Each subcommand lives in its own module; this one only wires argparse and turns the project's
errors into one clear line and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from services.cli import (
    config_cmd,
    demo_cmd,
    deploy_cmd,
    dlq_cmd,
    doctor_cmd,
    follow_cmd,
    kafka_cmd,
    policy_cmd,
    publish_cmd,
    topics_cmd,
    up_cmd,
)
from services.common.errors import MdmPushError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdmpush", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (kafka_cmd, topics_cmd, publish_cmd, policy_cmd, demo_cmd, deploy_cmd,
                   doctor_cmd, config_cmd, dlq_cmd, follow_cmd, up_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except MdmPushError as exc:
        print(f"mdmpush: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
