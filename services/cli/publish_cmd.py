"""`mdmpush publish`: enqueue a push request from the shell."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from services.sdk.publisher import PushPublisher, PushRequest


def register(sub: Any) -> None:
    p = sub.add_parser("publish", help="publish a NotificationRequest")
    p.add_argument("--tenant", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--targets", help="comma-separated enrollment ids")
    target.add_argument("--all", action="store_true", help="every enrollment of the tenant")
    p.add_argument("--initiator", choices=["user", "admin"], default="admin")
    p.add_argument("--kind", choices=["mdm", "aps"], default="mdm")
    p.add_argument("--command-type", default="")
    p.add_argument("--aps-payload", default=None, help='e.g. \'{"aps":{"badge":1}}\'')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = PushRequest(
        tenant=args.tenant,
        enrollment_ids=[t for t in (args.targets or "").split(",") if t],
        target_all=args.all,
        initiator=args.initiator,
        kind=args.kind,
        command_type=args.command_type,
        aps_payload=args.aps_payload,
        source="cli",
    )
    try:
        request.to_record()
    except ValueError as exc:
        print(f"mdmpush publish: {exc}")
        return 2
    requested_at = int(time.time() * 1000)
    request_id = PushPublisher().publish(request, requested_at)
    print(request_id)
    print(f"follow it: mdmpush follow {request_id} --since {requested_at}", file=sys.stderr)
    return 0
