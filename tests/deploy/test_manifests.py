"""deploy/ stays in step with the code: topics from the catalogue, manifests valid offline."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.cli.deploy_cmd import render_topics

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
