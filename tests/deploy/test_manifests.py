"""deploy/ stays in step with the code: topics from the catalogue, manifests valid offline."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.cli.deploy_cmd import render_topics
from services.monitoring.dashboards import DASHBOARDS, Dashboard, rendered_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_topics_manifest_is_the_catalogue() -> None:
    committed = (DEPLOY / "kafka" / "topics.yaml").read_text()
    assert committed == render_topics("mdm-kafka", 3), (
        "deploy/kafka/topics.yaml is stale: run `mdmpush deploy topics > deploy/kafka/topics.yaml`"
    )


def test_compacted_topics_are_compacted() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kafka" / "topics.yaml").read_text()))
    policy = {d["spec"]["topicName"]: d["spec"]["config"]["cleanup.policy"] for d in docs}
    assert policy["mdm.device.registry.v1"] == "compact"
    assert policy["mdm.push.config.v1"] == "compact"
    assert policy["mdm.push.jobs.bulk.v1"] == "delete"


def _core_documents() -> list[tuple[str, dict[str, object]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize("doc", [d for _, d in _core_documents()],
                         ids=[n for n, _ in _core_documents()])
def test_kubernetes_manifest_validates(doc: dict[str, object]) -> None:
    kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_dashboards_are_the_rendered_definitions() -> None:
    files = rendered_files()
    committed = {p.name for p in (DEPLOY / "grafana").glob("*.json")}
    assert committed == set(files), "run `mdmpush deploy dashboards`"
    for name, text in files.items():
        assert (DEPLOY / "grafana" / name).read_text(encoding="utf-8") == text, (
            f"deploy/grafana/{name} is stale: run `mdmpush deploy dashboards`")


@pytest.mark.parametrize("board", DASHBOARDS, ids=lambda b: b.uid)
def test_dashboard_model_is_importable(board: Dashboard) -> None:
    """What Grafana needs to import it: unique panel ids, no overlapping panels, every query
    bound to the dashboard's Prometheus datasource variable."""
    model = json.loads((DEPLOY / "grafana" / f"{board.uid}.json").read_text(encoding="utf-8"))
    panels = model["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"]


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool missing: scripts/setup-debian.sh installs prometheus"
    result = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" /
                                                             "alerts.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
