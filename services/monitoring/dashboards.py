"""Grafana dashboards for the pipeline, as data: every panel is a title, its PromQL and a unit.

deploy/grafana/*.json is `mdmpush deploy dashboards` output, committed; a test renders them
again (drift) and evaluates every query on a real Prometheus that scraped the real services, so
a renamed metric breaks the build instead of a panel. Two boards answer the two questions an
MDM operator asks: "are pushes going out?" (delivery) and "did they arrive, and if not, why?"
(arrival).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = ["DASHBOARDS", "Dashboard", "Panel", "render", "rendered_files"]

#: Grafana datasource reference resolved from the dashboard's own variable.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_WIDTH = 12
PANEL_HEIGHT = 8


@dataclass(frozen=True)
class Panel:
    """One time-series panel: one or more (legend, PromQL) queries in one unit."""

    title: str
    description: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)

    def queries(self) -> list[str]:
        return [expr for panel in self.panels for _, expr in panel.queries]


def _quantiles(metric: str) -> tuple[tuple[str, str], ...]:
    """p50 and p99 of a histogram over every instance."""
    return tuple((f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate({metric}_bucket[5m])))")
                 for q in ("5", "99"))


DELIVERY = Dashboard(
    uid="mdmpush-delivery",
    title="mdmpush — delivery",
    description="Requests in, pushes out: intake, fan-out, the APNs sender, retries and DLQ.",
    panels=(
        Panel("Gateway requests", "HTTP requests by route and status (webhook, check-in, push "
              "API); 4xx are rejected inputs, each with a reason in the response.",
              (("{{route}} {{status}}",
                "sum by (route, status) (rate(mdmpush_gateway_requests_total[5m]))"),),
              "reqps"),
        Panel("Jobs fanned out", "PushJobs produced per lane, and targets skipped (unknown, no "
              "token yet, checked out, token dead after a 410).",
              (("jobs {{lane}}", "sum by (lane) (rate(mdmpush_fanout_jobs_total[5m]))"),
               ("skipped {{reason}}",
                "sum by (reason) (rate(mdmpush_fanout_skipped_total[5m]))")),
              "ops"),
        Panel("Pushes by outcome", "One outcome per APNs attempt: SENT (200), RETRYING, FAILED "
              "(permanent), DEAD_LETTERED (attempts exhausted).",
              (("{{state}}", "sum by (state) (rate(mdmpush_sender_pushes_total[5m]))"),),
              "ops"),
        Panel("APNs errors by reason", "Apple's reason for every non-200 answer, and transport "
              "errors (reset, timeout, BreakerOpen).",
              (("{{state}} {{reason}}",
                'sum by (state, reason) (rate(mdmpush_sender_pushes_total{state!="SENT"}[5m]))'),),
              "ops"),
        Panel("APNs request latency", "Submit-to-answer time of APNs requests.",
              _quantiles("mdmpush_sender_apns_latency_seconds"), "s"),
        Panel("Sender work in hand", "Requests on the wire and jobs consumed but not yet sent "
              "(throttled, or waiting for the in-flight bound).",
              (("in flight", "sum(mdmpush_sender_in_flight)"),
               ("buffered", "sum(mdmpush_sender_buffered)")), "short"),
        Panel("Throttle waits", "How often a certificate's lane had to wait for its token "
              "bucket (PushPolicy): bulk waits are the throttle working.",
              (("{{lane}}", "sum by (lane) (rate(mdmpush_sender_throttle_waits_total[5m]))"),),
              "ops"),
        Panel("Retries by tier", "Jobs sent to each delayed retry topic.",
              (("{{tier}}", "sum by (tier) (rate(mdmpush_sender_retries_total[5m]))"),), "ops"),
        Panel("Certificates with an open breaker", "A certificate or connection error pauses "
              "that certificate; its jobs wait in a retry tier, none are burned.",
              (("open", "max(mdmpush_sender_breakers_open)"),), "short"),
        Panel("Dead letters", "Records set aside in mdm.push.dlq.v1 (last hour), by service and "
              "cause: exhausted attempts or undecodable input.",
              (("sender {{cause}}", "sum by (cause) (increase(mdmpush_sender_dlq_total[1h]))"),
               ("fan-out {{input}}",
                "sum by (input) (increase(mdmpush_fanout_poison_total[1h]))"),
               ("correlator {{source}}",
                "sum by (source) (increase(mdmpush_correlator_dlq_total[1h]))")),
              "short"),
        Panel("Jobs not re-sent after a takeover", "Jobs a crashed or rebalanced sender had "
              "finished past its committed offset (commit metadata): skipped, not pushed twice.",
              (("recovered", "sum(increase(mdmpush_sender_recovered_jobs_total[1h]))"),),
              "short"),
        Panel("Push certificates: days left", "Until the not-after of the certificate in use, "
              "per push topic. Apple warns at 30, 10 and 1 days (alerts at the same marks); "
              "renew it, never create a new one: the topic would change.",
              (("{{topic}}", "(min by (topic) (mdmpush_push_certificate_expiry_timestamp_seconds)"
                " - time()) / 86400"),),
              "d"),
        Panel("Push certificates: enrollments at stake", "Enrollments each certificate serves, "
              "and while a replacement of another topic is refused (created instead of "
              "renewed; the old one stays in use): refused = 1 and the enrollments it would "
              "have made unreachable.",
              (("enrolled {{topic}}", "max by (topic) (mdmpush_push_certificate_enrollments)"),
               ("refused {{topic}}",
                "max by (topic) (mdmpush_push_certificate_replacement_refused)"),
               ("unreachable {{topic}}",
                "max by (topic) (mdmpush_push_certificate_unreachable_enrollments)")),
              "short"),
        Panel("Coalesced pushes", "Bulk targets that rode on a push still outstanding for the "
              "same device (SKIPPED coalesced: no second push, the carrier's verdict closes "
              "them), against the jobs produced; carriers answered end an outstanding push.",
              (("coalesced", 'sum(rate(mdmpush_fanout_skipped_total{reason="coalesced"}[5m]))'),
               ("bulk jobs", 'sum(rate(mdmpush_fanout_jobs_total{lane="BULK"}[5m]))'),
               ("carriers answered", "sum(rate(mdmpush_fanout_carriers_answered_total[5m]))")),
              "ops"),
    ),
)

ARRIVAL = Dashboard(
    uid="mdmpush-arrival",
    title="mdmpush — did it arrive",
    description="The check-in correlator: answered pushes, silent ones and why.",
    panels=(
        Panel("Verdicts", "Exactly one verdict per push: ANSWERED (the device checked in) or "
              "UNANSWERED with a diagnosis.",
              (("{{state}} {{diagnosis}}",
                "sum by (state, diagnosis) (rate(mdmpush_correlator_verdicts_total[5m]))"),),
              "ops"),
        Panel("Silent devices by diagnosis (last hour)", "UnansweredPush alerts: wrong_topic, "
              "stale_token, stale_push_magic, unenrolled, device_unreachable, enrollment_race.",
              (("{{diagnosis}}",
                "sum by (diagnosis) (increase(mdmpush_correlator_alerts_total[1h]))"),),
              "short"),
        Panel("Push to check-in", "Time from APNs 200 to the device's next contact.",
              _quantiles("mdmpush_correlator_answer_latency_seconds"), "s"),
        Panel("Flagging lateness", "Time from a push's deadline to its UNANSWERED verdict.",
              _quantiles("mdmpush_correlator_flag_lateness_seconds"), "s"),
        Panel("Pushes awaiting contact", "Pending pushes the correlator holds (≤ 200 B each).",
              (("pending", "sum(mdmpush_correlator_pending)"),), "short"),
        Panel("Re-pushes by cause", "Race-window retries, pushes to a new token, and "
              "self-healing pushes for a stale PushMagic.",
              (("{{cause}}", "sum by (cause) (rate(mdmpush_correlator_repushes_total[5m]))"),),
              "ops"),
        Panel("Device registry changes", "Registry records changed, by cause (TokenUpdate, "
              "CheckOut, 410, contact).",
              (("{{cause}}",
                "sum by (cause) (rate(mdmpush_fanout_registry_updates_total[5m]))"),),
              "ops"),
        Panel("Re-arm pushes (last hour)", "One bulk push to each enrollment silent longer than "
              "rearm_after (docs/fleet-care.md), and the enrollments that contacted the server "
              "after theirs: a stale push connection re-armed.",
              (("re-armed", "sum(increase(mdmpush_correlator_rearm_pushes_total[1h]))"),
               ("answered after re-arm",
                "sum(increase(mdmpush_correlator_rearm_answered_total[1h]))")),
              "short"),
        Panel("Inactive devices", "Enrollments silent longer than inactive_after (each "
              "correlator replica counts the enrollments of its partitions: summed), and "
              "bulk targets skipped because of it in the last hour (priority pushes still go out).",
              (("inactive", "sum(mdmpush_correlator_inactive_enrollments)"),
               ("skipped (last hour)",
                'sum(increase(mdmpush_fanout_skipped_total{reason="inactive"}[1h]))')),
              "short"),
        Panel("Foreign check-ins (last hour)", "Check-ins naming another tenant than the "
              "enrollment's owner, refused before they touch anything: a misconfigured or "
              "hostile client.",
              (("correlator", "sum(increase(mdmpush_correlator_foreign_checkins_total[1h]))"),
               ("fan-out", "sum(increase(mdmpush_fanout_foreign_checkins_total[1h]))")),
              "short"),
        Panel("Enrollment book", "Enrollment rows the correlator replicas hold (the fleet, "
              "summed), the fullest replica beside its own max_enrollments bound, and check-ins "
              "of new enrollments refused past it.",
              (("rows", "sum(mdmpush_correlator_enrollments)"),
               ("fullest replica", "max(mdmpush_correlator_enrollments)"),
               ("refused (last hour)",
                "sum(increase(mdmpush_correlator_refused_enrollments_total[1h]))")),
              "short"),
    ),
)

DASHBOARDS = (DELIVERY, ARRIVAL)


def render(board: Dashboard) -> dict[str, object]:
    """The Grafana JSON model (schema 39): two panels per row, a datasource variable."""
    panels = []
    for index, panel in enumerate(board.panels):
        panels.append({
            "id": index + 1,
            "type": "timeseries",
            "title": panel.title,
            "description": panel.description,
            "datasource": DATASOURCE,
            "gridPos": {"x": (index % 2) * PANEL_WIDTH, "y": (index // 2) * PANEL_HEIGHT,
                        "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + n), "datasource": DATASOURCE, "expr": expr,
                 "legendFormat": legend}
                for n, (legend, expr) in enumerate(panel.queries)
            ],
        })
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["mdmpush"],
        "schemaVersion": 39,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "current": {},
        }]},
        "panels": panels,
    }


def rendered_files() -> dict[str, str]:
    """File name (under deploy/grafana/) → JSON text, as committed."""
    return {f"{board.uid}.json": json.dumps(render(board), indent=2, ensure_ascii=False) + "\n"
            for board in DASHBOARDS}
