"""`mdmpush dlq list|show|replay`: what is on the dead-letter topic, and putting jobs back.

    mdmpush dlq list   [filters]              groups by reason, source topic and service
    mdmpush dlq show   [filters] [--limit N]  the records, decoded, secrets masked
    mdmpush dlq replay [filters] [--dry-run] [--non-jobs] [--progress]

Filters: --reason TEXT (substring), --since WHEN (30m, 2h, 3d, ISO 8601, epoch ms), --topic
SOURCE_TOPIC, --service NAME, --job JOB_ID, --lane priority|bulk. Replay is idempotent by
record (the replay ledger).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from services.common.catalogue import Topics
from services.common.kafka.producer import DeliveryError
from services.common.settings import KafkaSettings
from services.dlq import runner
from services.dlq.render import render_dead_letter, render_groups
from services.dlq.replay import Replay
from services.dlq.select import Selection, group, parse_since
from services.doctor.times import iso

#: Replayed / already-replayed records listed one per line up to this many.
LIST_LIMIT = 20


def register(sub: Any) -> None:
    p = sub.add_parser("dlq", help="list, show and replay dead letters")
    actions = p.add_subparsers(dest="dlq_action", required=True)
    for name, helptext in (("list", "group dead letters by reason, source and service"),
                           ("show", "print dead letters (decoded, secrets masked)"),
                           ("replay", "put dead-lettered push jobs back on their jobs topic")):
        a = actions.add_parser(name, help=helptext)
        a.add_argument("--reason", help="substring of the dead-letter reason (any case)")
        a.add_argument("--since", help="only records dead-lettered since: 30m, 2h, 3d, ISO "
                                       "8601 or epoch ms")
        a.add_argument("--topic", help="source topic (with or without the topic prefix)")
        a.add_argument("--service", help="service that dead-lettered it (sender, fanout, ...)")
        a.add_argument("--job", help="one job id")
        a.add_argument("--lane", choices=["priority", "bulk"], help="push jobs of that lane")
        if name == "show":
            a.add_argument("--limit", type=int, default=20, help="at most N records (0: all)")
        if name == "replay":
            a.add_argument("--dry-run", action="store_true", help="report, produce nothing")
            a.add_argument("--non-jobs", action="store_true",
                           help="also replay what is not a push job: a request set aside by the "
                                "fan-out is published again, other records go back unchanged "
                                "to their source topic")
            a.add_argument("--progress", action="store_true",
                           help="progress bar on stderr even when it is not a terminal")
        a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        selection = Selection(
            reason=args.reason,
            since_ms=parse_since(args.since, int(time.time() * 1000)) if args.since else None,
            topic=args.topic, service=args.service, job_id=args.job,
            lane=args.lane)
    except ValueError as exc:
        print(f"mdmpush dlq: {exc}", file=sys.stderr)
        return 2
    kafka = KafkaSettings()
    if args.dlq_action == "replay":
        return _replay(kafka, selection, args)
    found = runner.read_dead_letters(kafka, selection)
    topics = Topics(kafka.topic_prefix)
    if args.dlq_action == "list":
        print(render_groups(group(found, topics)))
        return 0
    shown = found if args.limit <= 0 else found[:args.limit]
    for dead in shown:
        print(render_dead_letter(dead, topics))
    if len(shown) < len(found):
        print(f"… {len(found) - len(shown)} more (--limit 0 shows all)")
    return 0


def _replay(kafka: KafkaSettings, selection: Selection, args: argparse.Namespace) -> int:
    bar = ProgressBar(sys.stderr) if args.progress or sys.stderr.isatty() else None
    try:
        report = runner.replay(kafka, selection, dry_run=args.dry_run,
                               non_jobs=args.non_jobs,
                               progress=bar.update if bar else None)
    except DeliveryError as exc:
        print(f"mdmpush dlq replay: Kafka refused a write, stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    verb = "would replay" if report.dry_run else "replayed"
    _some([f"{verb} {item.dead.coordinates} -> {item.topic} ({_what(item)})"
           for item in report.replayed])
    _some([f"already replayed {dead.coordinates} (at {iso(entry.get('at'))}, to "
           f"{entry.get('to')})" for dead, entry in report.already])
    for skipped in report.skipped:  # these and failures need a look: every one is printed
        print(f"skipped {skipped.dead.coordinates}: {skipped.why}")
    for item, error in report.failed:
        print(f"FAILED {item.dead.coordinates} -> {item.topic}: {error}")
    print(f"{verb} {len(report.replayed)}, already replayed {len(report.already)}, "
          f"skipped {len(report.skipped)}, failed {len(report.failed)}")
    return 1 if report.failed else 0


def _what(item: Replay) -> str:
    job = item.dead.job
    return job["job_id"] if job else item.dead.record_name or "raw bytes"


def _some(lines: list[str], limit: int = LIST_LIMIT) -> None:
    """The first `limit` lines, then how many more: a large replay stays readable."""
    for line in lines[:limit]:
        print(line)
    if len(lines) > limit:
        print(f"… and {len(lines) - limit} more")


class ProgressBar:
    """`[#####.....] 120/1000` rewritten in place on stderr."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = False

    def update(self, done: int, total: int) -> None:
        filled = self.WIDTH * done // total if total else self.WIDTH
        self.out.write(f"\rreplay [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total}")
        self.out.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
