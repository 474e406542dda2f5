"""`mdmpush config reference [--check]`: docs/configuration.md from the settings models.

The page is generated (services/common/config_reference.py) and committed; `--check` only says
whether it is stale (exit 1), for CI and for a reviewer who changed a setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from services.common import config_reference


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="the configuration reference (docs/configuration.md)")
    p.add_argument("action", choices=["reference"])
    p.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    p.add_argument("--output", type=Path, default=config_reference.DOC_PATH)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != config_reference.render():
            print(f"{args.output} is stale: run `mdmpush config reference`")
            return 1
        print(f"{args.output} is up to date")
        return 0
    changed = config_reference.write(args.output)
    print(f"{args.output} {'written' if changed else 'already up to date'}")
    missing = config_reference.undocumented()
    if missing:
        print(f"{len(missing)} setting(s) without a description, `#:` comment or docstring: "
              + ", ".join(missing))
    return 0
