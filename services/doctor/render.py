"""Plain-text views of the doctor's reports, for a terminal or a support ticket."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.doctor.compare import SysdiagnoseReport
from services.doctor.feedback import APPLE_CHECKLIST, FeedbackBundle
from services.doctor.history import DeviceHistory
from services.doctor.sysdiagnose import DeviceSide
from services.doctor.times import iso

MARK = {"ok": "ok      ", "mismatch": "MISMATCH", "missing": "MISSING "}


def device_text(device: DeviceSide) -> str:
    """What the archive says, shown before the registry is asked: it needs no Kafka."""
    return "\n".join(_device_lines(device))


def _device_lines(device: DeviceSide) -> Iterator[str]:
    yield f"sysdiagnose {device.source} ({device.stubs} profile stub(s))"
    yield "device says:"
    for found in device.topics:
        yield f"  push topic    {found.topic}   ({found.stub})"
    if not device.topics:
        yield "  push topic    (no Topic in any *.stub)"
    yield f"  push magic    {device.push_magic or '(none)'}"
    yield f"  token SHA-256 {device.token_hash.hex() if device.token_hash else '(none)'}"


def comparison_text(report: SysdiagnoseReport) -> str:
    """The registry record compared with, one verdict (and next step) per item."""
    return "\n".join(_comparison_lines(report))


def _comparison_lines(report: SysdiagnoseReport) -> Iterator[str]:
    yield from report.notes
    if report.record is not None:
        rec = report.record
        yield (f"registry: enrollment {rec['enrollment_id']} (tenant {rec['tenant'] or '-'}, "
               f"state {rec['state']}, last contact {iso(rec.get('last_contact_at')) or 'never'})")
        for check in report.checks:
            yield f"  {MARK[check.verdict.value]} {check.item}"
            if check.verdict.value != "ok":
                yield f"           device:   {check.device or '(none)'}"
                yield f"           registry: {check.registry or '(none)'}"
                yield f"           next step: {check.next_step}"
    if report.other_enrollments:
        yield f"other enrollments of this device: {', '.join(report.other_enrollments)}"
    if report.record is not None:
        yield "verdict: all three values match" if report.healthy else \
            "verdict: pushes cannot reach this device until the step(s) above are done"


def history_text(history: DeviceHistory) -> str:
    return "\n".join(_history_lines(history))


def _history_lines(history: DeviceHistory) -> Iterator[str]:
    rec = history.record
    yield f"enrollment {history.enrollment_id}"
    if rec is None:
        yield "  registry: no record"
    else:
        yield (f"  tenant {rec['tenant'] or '-'}  udid {rec.get('udid') or '-'}  "
               f"state {rec['state']}")
        yield f"  topic      {rec.get('topic') or '-'}"
        yield f"  token      {rec.get('token_hex') or '-'}"
        yield f"  push magic {rec.get('push_magic') or '-'}"
        yield f"  token set  {iso(rec.get('token_updated_at')) or '-'}"
        if rec.get("token_dead_since"):
            yield f"  token dead since {iso(rec['token_dead_since'])} (APNs 410)"
    yield f"  last contact {iso(history.last_contact_at) or 'never'}"
    yield f"  activity   {_activity(history.activity)}"
    diagnosis = history.diagnosis
    yield f"diagnosis: {diagnosis.name} ({diagnosis.why})"
    yield f"push history ({len(history.outcomes)} outcome(s)):"
    yield (f"  {'time':24} {'state':13} {'status':6} {'reason':24} {'attempt':7} {'repush':6} "
           f"{'apns-id':36} job")
    for o in history.outcomes:
        status = "" if o.get("status") is None else str(o["status"])
        yield (f"  {iso(o['at']):24} {o['state']:13} {status:6} {o.get('reason') or '':24} "
               f"{o['attempt']:<7} {o['repush']:<6} {o.get('apns_id') or '-':36} {o['job_id']}")
    yield f"alerts ({len(history.alerts)}):"
    for a in history.alerts:
        evidence = ", ".join(f"{k}={v}" for k, v in sorted(a["evidence"].items()))
        action = f"action: {a['action']}" if a["action"] else ""
        yield (f"  {iso(a['flagged_at'])} {a['diagnosis'].lower()} job {a['job_id']} pushed "
               f"{iso(a['pushed_at'])} {evidence} {action}").rstrip()
    if history.undecodable:
        yield f"warning: {history.undecodable} undecodable record(s) skipped"


def _activity(record: dict[str, Any] | None) -> str:
    """The correlator's silent-device care for this enrollment (docs/fleet-care.md)."""
    if record is None:
        return "ACTIVE (never marked inactive, never re-armed)"
    rearmed = f", re-armed {iso(record['rearmed_at'])}" if record.get("rearmed_at") else ""
    if record["state"] == "INACTIVE":
        return (f"INACTIVE since {iso(record['at'])} (silent since "
                f"{iso(record.get('last_contact_at')) or 'never'}; bulk pushes are skipped until "
                f"it next contacts{rearmed})")
    return f"ACTIVE (as of {iso(record['at'])}{rearmed})"


def feedback_text(bundle: FeedbackBundle) -> str:
    return "\n".join(_feedback_lines(bundle))


def _feedback_lines(bundle: FeedbackBundle) -> Iterator[str]:
    yield f"Feedback for Apple: MDM push not acted on (enrollment {bundle.enrollment_id})"
    if bundle.udid:
        yield f"  device UDID:        {bundle.udid}"
    yield f"  push topic:         {bundle.push_topic or '(unknown)'}"
    yield f"  push token:         {bundle.push_token or '(unknown)'}"
    yield f"  push magic used:    {bundle.push_magic or '(unknown)'}"
    yield f"  last answered push: {iso(bundle.last_answered_at) or 'never'}"
    yield f"  failures began:     {iso(bundle.failures_began_at) or 'no failure since'}"
    yield f"  failed pushes since then ({len(bundle.failed_pushes)}):"
    for p in bundle.failed_pushes:
        status = "no answer" if p.status is None else str(p.status)
        yield (f"    {iso(p.at)}  {p.state:13} APNs {status:9} {p.reason or '':32} "
               f"apns-id {p.apns_id or '-'}")
    if bundle.earlier_failures:
        yield f"  ({bundle.earlier_failures} earlier failure(s) ended by an answered push)"
    yield f"  {APPLE_CHECKLIST}"
