"""`mdmpush follow REQUEST_ID`: live progress of one request, then its summary and diagnoses.

The live line (targets by state) goes to stderr, rewritten in place on a terminal and one line
per change otherwise; the summary goes to stdout. Exit 0 once every target is in a terminal
state, 1 when --timeout ends it first. services.sdk.track does the work.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from services.dlq.select import parse_since
from services.sdk.track import COALESCED, PENDING, Progress, track

#: Display order: not started, in flight, then the terminal states.
ORDER = (PENDING, "RETRYING", "SENT", COALESCED, "ANSWERED", "UNANSWERED", "FAILED",
         "DEAD_LETTERED", "SKIPPED")


def register(sub: Any) -> None:
    p = sub.add_parser("follow", help="follow one request until every target is accounted for")
    p.add_argument("request_id")
    p.add_argument("--since", help="a time at or before the request (30m, 2h, ISO 8601, epoch "
                                   "ms): the request is looked for from there on; default: "
                                   "the last 24 h")
    p.add_argument("--timeout", type=float, default=None, help="give up after SECONDS")
    p.add_argument("--interval", type=float, default=1.0, help="refresh every SECONDS")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since, int(time.time() * 1000)) if args.since else None
    except ValueError as exc:
        print(f"mdmpush follow: {exc}", file=sys.stderr)
        return 2
    live = sys.stderr.isatty()
    last: Progress | None = None
    for progress in track(args.request_id, since_ms=since, interval_s=args.interval,
                          timeout_s=args.timeout):
        line = status_line(progress)
        sys.stderr.write(f"\r\x1b[2K{line}" if live else f"{line}\n")
        sys.stderr.flush()
        last = progress
    if live:
        sys.stderr.write("\n")
    if last is None:
        return 1
    print(summary(last))
    return 0 if last.complete else 1


def _ordered(progress: Progress) -> list[tuple[str, int]]:
    known = [(s, progress.by_state[s]) for s in ORDER if progress.by_state.get(s)]
    return known + sorted((s, n) for s, n in progress.by_state.items() if s not in ORDER)


def status_line(progress: Progress) -> str:
    states = "  ".join(f"{state} {count}" for state, count in _ordered(progress))
    return f"{progress.request_id}: {progress.terminal}/{progress.targets} done  {states}"


def summary(progress: Progress) -> str:
    verdict = "complete" if progress.complete else "NOT complete (timed out)"
    lines = [f"request {progress.request_id}: {progress.targets} target(s), {verdict}"]
    for state, count in _ordered(progress):
        reasons = progress.reasons.get(state, {})  # terminal states only (accounting's rule)
        detail = ", ".join(f"{reason} {n}" for reason, n in
                           sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
        lines.append(f"  {state:<14} {count:>7}  {detail}".rstrip())
    return "\n".join(lines)
