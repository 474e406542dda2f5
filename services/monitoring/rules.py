"""The alert rules as a PrometheusRule for kube-prometheus-stack, from the one rule file.

deploy/prometheus/alerts.yaml is the source: promtool checks it, the real-Prometheus test loads
it as is, and this module wraps its groups, unchanged, in the custom resource the Prometheus
Operator watches (deploy/k8s/base/monitoring/prometheusrule.yaml, `mdmpush deploy rules`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["ALERTS_FILE", "PROMETHEUS_RULE_LABELS", "load_groups", "render_prometheus_rule"]

ALERTS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"

#: kube-prometheus-stack selects rules labelled with its Helm release (`release: <name>`) unless
#: ruleSelectorNilUsesHelmValues=false; the default release name is used here, overlays patch it.
PROMETHEUS_RULE_LABELS = {"app.kubernetes.io/part-of": "mdmpush",
                          "release": "kube-prometheus-stack"}


def load_groups(path: Path = ALERTS_FILE) -> list[dict[str, Any]]:
    """The rule groups of a Prometheus rule file."""
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return groups


def render_prometheus_rule(path: Path = ALERTS_FILE) -> dict[str, Any]:
    """One PrometheusRule carrying every group of the rule file."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mdmpush", "labels": dict(PROMETHEUS_RULE_LABELS)},
        "spec": {"groups": load_groups(path)},
    }
