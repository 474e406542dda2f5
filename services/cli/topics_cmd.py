"""`mdmpush topics create | list`: the catalogue applied to a cluster, idempotently."""

from __future__ import annotations

import argparse
from typing import Any

from services.common.admin import create_topics
from services.common.catalogue import Topics, all_topics
from services.common.settings import KafkaSettings


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="create or list the catalogue's topics")
    p.add_argument("action", choices=["create", "list"])
    p.add_argument("--partitions", type=int, default=None,
                   help="override every topic's partition count (small local clusters)")
    p.add_argument("--replication-factor", type=int, default=None,
                   help="default: MDMPUSH_KAFKA_REPLICATION_FACTOR (3), clamped to the brokers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = KafkaSettings()
    if args.action == "list":
        topics = Topics(settings.topic_prefix)
        for spec in all_topics():
            print(f"{topics.name(spec):40} {spec.value_schema:20} partitions={spec.partitions} "
                  f"cleanup={spec.cleanup.value}")
        return 0
    created = create_topics(settings, all_topics(), args.replication_factor, args.partitions)
    print(f"{len(created)} topic(s) created, {len(all_topics()) - len(created)} already existed")
    return 0
