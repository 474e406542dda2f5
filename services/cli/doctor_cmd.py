"""`mdmpush doctor sysdiagnose | device | feedback`: why a device does not answer its pushes.

Exit codes (the same for the three commands; also in `mdmpush doctor --help`):
0 nothing wrong found (or `--offline`: the device's values were shown),
1 the doctor found a problem (a mismatch, a missing value, an unknown enrollment),
2 the input or Kafka is unusable (an `MdmPushError`, one line on stderr, via `main`),
3 `sysdiagnose` only: the device's values were shown but the comparison with the registry was
  skipped (Kafka unreachable, no registry topic), with the reason on one line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from services.common.settings import KafkaSettings
from services.doctor.compare import build_report
from services.doctor.feedback import build_feedback
from services.doctor.history import load_history
from services.doctor.probe import PROBE_TIMEOUT_S
from services.doctor.registry_lookup import lookup_registry
from services.doctor.render import comparison_text, device_text, feedback_text, history_text
from services.doctor.sysdiagnose import read_sysdiagnose

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_SKIPPED = 3
EXIT_CODES = ("exit codes: 0 nothing wrong found; 1 a problem found; 2 unusable input or Kafka; "
              "3 (sysdiagnose) device values shown, registry comparison skipped")


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="diagnose a device that does not answer pushes",
                       epilog=EXIT_CODES)
    doctor = p.add_subparsers(dest="doctor_command", required=True)

    s = doctor.add_parser("sysdiagnose", help="compare a device's sysdiagnose with the registry",
                          epilog=EXIT_CODES)
    s.add_argument("path", type=Path, help="sysdiagnose .tar.gz / .tgz / .tar, or its folder")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--enrollment", help="enrollment id to compare with")
    who.add_argument("--udid", help="device UDID to compare with (its live enrollment)")
    who.add_argument("--offline", action="store_true", help="show the device's values only")
    _kafka_timeout(s, "skipping the comparison")
    s.set_defaults(func=run_sysdiagnose)

    d = doctor.add_parser("device", help="an enrollment's record, push history and diagnosis",
                          epilog=EXIT_CODES)
    d.add_argument("enrollment_id")
    _kafka_timeout(d, "giving up")
    d.set_defaults(func=run_device)

    f = doctor.add_parser("feedback", help="the bundle Apple asks for when filing feedback",
                          epilog=EXIT_CODES)
    f.add_argument("enrollment_id")
    f.add_argument("--json", action="store_true", help="JSON instead of text")
    _kafka_timeout(f, "giving up")
    f.set_defaults(func=run_feedback)


def _kafka_timeout(parser: argparse.ArgumentParser, then: str) -> None:
    parser.add_argument("--kafka-timeout", type=float, default=PROBE_TIMEOUT_S, metavar="SECONDS",
                        help=f"how long to wait for Kafka before {then} "
                             f"(default {PROBE_TIMEOUT_S:g})")


def run_sysdiagnose(args: argparse.Namespace) -> int:
    device = read_sysdiagnose(args.path)  # before Kafka: a bad archive fails fast
    print(device_text(device), flush=True)  # needs no Kafka: shown whatever happens next
    if args.offline:
        print("offline: the device's own values only")
        return EXIT_OK
    found = lookup_registry(KafkaSettings(), args.kafka_timeout)
    if found.registry is None:
        print(f"comparison with the registry skipped: {found.skipped_because} "
              "(--offline skips the attempt)")
        return EXIT_SKIPPED
    report = build_report(device, found.registry, args.enrollment, args.udid)
    print(comparison_text(report))
    return EXIT_OK if report.healthy else EXIT_PROBLEM


def run_device(args: argparse.Namespace) -> int:
    history = load_history(KafkaSettings(), args.enrollment_id,
                           probe_timeout_s=args.kafka_timeout)
    print(history_text(history))
    return EXIT_PROBLEM if history.record is None and not history.outcomes else EXIT_OK


def run_feedback(args: argparse.Namespace) -> int:
    bundle = build_feedback(load_history(KafkaSettings(), args.enrollment_id,
                                         probe_timeout_s=args.kafka_timeout))
    print(json.dumps(bundle.to_json(), indent=2) if args.json else feedback_text(bundle))
    return EXIT_OK
