"""`mdmpush doctor sysdiagnose | device | feedback`: why a device does not answer its pushes.

Exit codes: 0 nothing wrong found, 1 the doctor found a problem (a mismatch, a missing value, an
unknown enrollment), 2 the input or Kafka is unusable (via `MdmPushError` in `main`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from services.common.registry_view import load_registry
from services.common.settings import KafkaSettings
from services.doctor.compare import build_report
from services.doctor.feedback import build_feedback
from services.doctor.history import load_history
from services.doctor.render import feedback_text, history_text, sysdiagnose_text
from services.doctor.sysdiagnose import read_sysdiagnose


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="diagnose a device that does not answer pushes")
    doctor = p.add_subparsers(dest="doctor_command", required=True)

    s = doctor.add_parser("sysdiagnose", help="compare a device's sysdiagnose with the registry")
    s.add_argument("path", type=Path, help="sysdiagnose .tar.gz / .tgz / .tar, or its folder")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--enrollment", help="enrollment id to compare with")
    who.add_argument("--udid", help="device UDID to compare with (its live enrollment)")
    who.add_argument("--offline", action="store_true", help="show the device's values only")
    s.set_defaults(func=run_sysdiagnose)

    d = doctor.add_parser("device", help="an enrollment's record, push history and diagnosis")
    d.add_argument("enrollment_id")
    d.set_defaults(func=run_device)

    f = doctor.add_parser("feedback", help="the bundle Apple asks for when filing feedback")
    f.add_argument("enrollment_id")
    f.add_argument("--json", action="store_true", help="JSON instead of text")
    f.set_defaults(func=run_feedback)


def run_sysdiagnose(args: argparse.Namespace) -> int:
    device = read_sysdiagnose(args.path)  # before Kafka: a bad archive fails fast
    # The whole registry, not one key: other enrollments of the same UDID are the evidence of
    # a stale PushMagic.
    registry = None if args.offline else load_registry(KafkaSettings())
    report = build_report(device, registry, args.enrollment, args.udid)
    print(sysdiagnose_text(report))
    return 0 if args.offline or report.healthy else 1


def run_device(args: argparse.Namespace) -> int:
    history = load_history(KafkaSettings(), args.enrollment_id)
    print(history_text(history))
    return 1 if history.record is None and not history.outcomes else 0


def run_feedback(args: argparse.Namespace) -> int:
    bundle = build_feedback(load_history(KafkaSettings(), args.enrollment_id))
    print(json.dumps(bundle.to_json(), indent=2) if args.json else feedback_text(bundle))
    return 0
