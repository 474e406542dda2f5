"""`mdmpush`: run the local stack, manage topics, publish requests, run the demo.

Each subcommand lives in its own module; this one only wires argparse and turns the project's
errors into one clear line and exit code 2 instead of a traceback. Only the module of the
command asked for is imported (all of them for `mdmpush --help`): some pull in the sender's HTTP
stack or faust, which a support engineer running `mdmpush doctor` should not wait for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from services.common.errors import MdmPushError

#: Subcommand -> its module in services/cli, in the order `mdmpush --help` lists them.
COMMANDS = {
    "kafka": "kafka_cmd",
    "topics": "topics_cmd",
    "publish": "publish_cmd",
    "policy": "policy_cmd",
    "demo": "demo_cmd",
    "deploy": "deploy_cmd",
    "doctor": "doctor_cmd",
    "config": "config_cmd",
    "dlq": "dlq_cmd",
    "follow": "follow_cmd",
    "certs": "certs_cmd",
    "up": "up_cmd",
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with only the subcommand named in `argv` registered when it names one."""
    parser = argparse.ArgumentParser(prog="mdmpush", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    command = next((a for a in argv if not a.startswith("-")), None)
    for name in [command] if command in COMMANDS else COMMANDS:
        importlib.import_module(f"services.cli.{COMMANDS[name]}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
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
