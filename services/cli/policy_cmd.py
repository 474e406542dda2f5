"""`mdmpush policy set | clear`: change a certificate's push throttle live, from the shell."""

from __future__ import annotations

import argparse
from typing import Any

from services.sdk.policy import DEFAULT_CERTIFICATE, PolicyPublisher, PushPolicy


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="set or clear a certificate's push policy (live)")
    actions = p.add_subparsers(dest="action", required=True)
    set_p = actions.add_parser("set", help="publish a policy (replaces the previous one)")
    set_p.add_argument("certificate", nargs="?", default=DEFAULT_CERTIFICATE,
                       help="push topic of the certificate; '*' (default) for every other")
    set_p.add_argument("--bulk-per-minute", type=float, default=0.0,
                       help="admin-action pushes per minute, 0 = unthrottled (Afaria: 50)")
    set_p.add_argument("--priority-per-minute", type=float, default=0.0,
                       help="user-action pushes per minute, 0 = unthrottled")
    set_p.add_argument("--scope", choices=["farm", "per_instance"], default="farm")
    set_p.add_argument("--shards", type=int, default=1,
                       help="split a hot certificate over this many keys (each gets rate/shards)")
    set_p.add_argument("--max-attempts", type=int, default=5)
    clear_p = actions.add_parser("clear", help="remove a certificate's own policy")
    clear_p.add_argument("certificate")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    publisher = PolicyPublisher()
    if args.action == "clear":
        publisher.clear(args.certificate)
        print(f"policy of {args.certificate} cleared: the default applies")
        return 0
    policy = PushPolicy(
        certificate=args.certificate,
        priority_per_minute=args.priority_per_minute,
        bulk_per_minute=args.bulk_per_minute,
        scope=args.scope.upper(),
        shards=args.shards,
        max_attempts=args.max_attempts,
    )
    try:
        policy.to_record()
    except ValueError as exc:
        print(f"mdmpush policy: {exc}")
        return 2
    publisher.set(policy)
    print(f"policy of {policy.certificate} published")
    return 0
