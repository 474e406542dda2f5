"""The generated files under deploy/ are what the code renders now (topics, users, rules,
dashboards): a renamed topic, group or metric breaks the build instead of the cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.cli.deploy_cmd import (
    SERVICES,
    USERS,
    internal_topics,
    kafka_users,
    render_rules,
    render_topics,
    render_users,
    user_name,
)
from services.cli.main import main
from services.common.catalogue import Topics, all_topics
from services.correlator.changelog import STATE
from services.correlator.settings import CorrelatorSettings
from services.dlq.ledger import LEDGER
from services.fanout.app import create_app
from services.fanout.settings import FanoutSettings
from services.monitoring.dashboards import DASHBOARDS, Dashboard, rendered_files
from services.sender.settings import SenderSettings
from tests.deploy.rendering import K8S

KAFKA = K8S / "kafka"
DASHBOARD_DIR = K8S / "base" / "dashboards"


@pytest.mark.parametrize(("path", "text", "command"), [
    (KAFKA / "topics.yaml", render_topics(), "topics"),
    (KAFKA / "users.yaml", render_users(), "users"),
    (K8S / "base" / "monitoring" / "prometheusrule.yaml", render_rules(), "rules"),
], ids=["topics", "users", "rules"])
def test_generated_manifest_is_current(path: Path, text: str, command: str) -> None:
    assert path.read_text(encoding="utf-8") == text, (
        f"{path.relative_to(K8S)} is stale: run `mdmpush deploy {command} > {path}`")


@pytest.mark.parametrize("command", ["topics", "users", "rules"])
def test_cli_prints_the_committed_file(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`mdmpush deploy <command>` (what the drift messages tell people to run) prints the file."""
    committed = {"topics": KAFKA / "topics.yaml", "users": KAFKA / "users.yaml",
                 "rules": K8S / "base" / "monitoring" / "prometheusrule.yaml"}[command]
    assert main(["deploy", command]) == 0
    assert capsys.readouterr().out == committed.read_text(encoding="utf-8")


def test_every_topic_a_service_uses_is_declared() -> None:
    """The catalogue, the correlator's state topic, the DLQ replay ledger and every internal topic
    faust would create (read from a real, unstarted fan-out app): none is created at run time."""
    declared = {d["spec"]["topicName"] for d in yaml.safe_load_all(render_topics())}
    app = create_app(FanoutSettings(), None)
    faust_topics = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    faust_topics |= {f"{app.conf.id}-__assignor-__leader"}
    faust_topics |= {name for agent in app.agents.values()
                     for name in agent.channel.get_topic_name().split(",")
                     if name.startswith(app.conf.id)}
    expected = {Topics().name(s) for s in [*all_topics(), STATE, LEDGER]} | faust_topics
    assert declared == expected
    assert {s.name for s in internal_topics()} == faust_topics


def test_changelogs_and_state_are_compacted() -> None:
    policy = {d["spec"]["topicName"]: d["spec"]["config"]["cleanup.policy"]
              for d in yaml.safe_load_all(render_topics())}
    assert policy["mdm.device.registry.v1"] == policy["mdm.push.config.v1"] == "compact"
    assert policy["mdm.correlator.state.v1"] == "compact"
    assert policy["mdmpush-fanout-registry-changelog"] == "compact"
    assert policy["mdm.push.jobs.bulk.v1"] == "delete"


def _grants(service: str, prefix: str = "") -> dict[tuple[str, str, str], set[str]]:
    user = {u["metadata"]["name"]: u
            for u in kafka_users("mdm-kafka", prefix)}[user_name(service)]
    return {(a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"]):
            set(a["operations"]) for a in user["spec"]["authorization"]["acls"]}


def _allowed(service: str, kind: str, name: str, operation: str, prefix: str = "") -> bool:
    """What Kafka's simple authorizer decides for one request, from the user's ACLs."""
    return any(operation in ops and kind == k
               and (name == n if pattern == "literal" else name.startswith(n))
               for (k, n, pattern), ops in _grants(service, prefix).items())


def test_gateway_only_writes_its_two_topics() -> None:
    assert _allowed("gateway", "topic", "mdm.checkin.events.v1", "Write")
    assert _allowed("gateway", "topic", "mdm.notification.requests.v1", "Write")
    assert not any(kind == "group" or "Read" in ops for (kind, _, _), ops in
                   _grants("gateway").items())


def test_consumers_may_use_the_groups_their_code_uses() -> None:
    fanout = FanoutSettings().app_id
    sender = SenderSettings().group_id
    correlator = CorrelatorSettings().group_id
    # Readers (common/kafka/reader.py) take the group `mdmpush-<name>-<random>`, never committed.
    for service, group in [("fanout", fanout), ("fanout", f"{fanout}-dead-tokens"),
                           ("fanout", "mdmpush-fanout-config-0f3a9c1d"), ("sender", sender),
                           ("fanout", "mdmpush-fanout-activity-0f3a9c1d"),
                           ("fanout", "mdmpush-fanout-table-load-0f3a9c1d"),
                           ("fanout", f"{fanout}-checkins"),
                           ("sender", "mdmpush-sender-policies-0f3a9c1d"),
                           ("sender", "mdmpush-sender-census-0f3a9c1d"),
                           ("sender", "mdmpush-sender-already-sent-0f3a9c1d"),
                           ("correlator", correlator), ("correlator", f"{correlator}.contacts"),
                           ("correlator", "mdmpush-correlator.restore-0f3a9c1d")]:
        assert _allowed(service, "group", group, "Read"), (service, group)
    assert not _allowed("sender", "group", correlator, "Read")
    assert not _allowed("correlator", "group", sender, "Read")


def test_a_topic_prefix_keeps_every_group_the_code_uses() -> None:
    """With MDMPUSH_KAFKA_TOPIC_PREFIX the fan-out's app id (so its faust groups and topics)
    carries the prefix, its readers' throw-away group ids do not: both must stay allowed."""
    prefix = "prod."
    fanout = f"{prefix}{FanoutSettings().app_id}"
    for group in (fanout, f"{fanout}-checkins", f"{fanout}-dead-tokens",
                  "mdmpush-fanout-config-0f3a9c1d", "mdmpush-fanout-activity-0f3a9c1d",
                  "mdmpush-fanout-table-load-0f3a9c1d"):
        assert _allowed("fanout", "group", group, "Read", prefix), group
    assert _allowed("fanout", "topic", f"{fanout}-registry-changelog", "Create", prefix)
    assert _allowed("fanout", "topic", "prod.mdm.enrollment.activity.v1", "Read", prefix)
    assert not _allowed("fanout", "topic", "mdm.enrollment.activity.v1", "Read", prefix)
    assert not _allowed("fanout", "group", "mdmpush-sender", "Read", prefix)


def test_only_owned_state_may_be_created() -> None:
    assert _allowed("correlator", "topic", STATE.name, "Create")
    assert _allowed("correlator", "topic", "mdm.enrollment.activity.v1", "Create")
    assert _allowed("fanout", "topic", "mdmpush-fanout-carriers-changelog", "Create")
    assert _allowed("fanout", "topic", "mdmpush-fanout-registry-changelog", "Create")
    assert not _allowed("correlator", "topic", "mdm.push.outcomes.v1", "Create")
    assert not _allowed("sender", "topic", "mdm.push.dlq.v1", "Create")
    assert not any("Delete" in ops or "Alter" in ops or "All" in ops
                   for user in USERS for ops in _grants(user).values())


def test_each_service_writes_only_where_its_code_produces() -> None:
    writes = {s: {n for (k, n, _), ops in _grants(s).items() if k == "topic" and "Write" in ops}
              for s in SERVICES}
    assert writes["sender"] == {"mdm.push.dlq.v1", "mdm.push.outcomes.v1",
                                *(Topics().retry(d) for d in SenderSettings().retry_delays_ms)}
    # Re-push jobs go on the priority lane, re-arm pushes (silent-device care) on the bulk lane.
    assert writes["correlator"] == {"mdm.push.outcomes.v1", "mdm.push.alerts.v1",
                                    "mdm.push.jobs.priority.v1", "mdm.push.jobs.bulk.v1",
                                    "mdm.enrollment.activity.v1", "mdm.push.dlq.v1",
                                    STATE.name}
    assert "mdm.push.alerts.v1" not in writes["fanout"] | writes["sender"]
    assert "mdm.enrollment.activity.v1" not in writes["fanout"] | writes["sender"]


def test_each_service_reads_what_its_code_consumes() -> None:
    """The compacted views too: the sender's enrollment census follows the registry (and a sender
    reads the outcomes a partition's previous owner wrote), the fan-out skips inactive targets
    from the activity topic the correlator writes (and replays)."""
    reads = {s: {n for (k, n, _), ops in _grants(s).items() if k == "topic" and "Read" in ops}
             for s in SERVICES}
    assert {"mdm.device.registry.v1", "mdm.push.outcomes.v1"} <= reads["sender"]
    assert "mdm.enrollment.activity.v1" in reads["fanout"] & reads["correlator"]
    assert reads["gateway"] == set()
    assert "mdm.enrollment.activity.v1" not in reads["sender"]


def test_dashboards_are_the_rendered_definitions() -> None:
    files = rendered_files()
    committed = {p.name for p in DASHBOARD_DIR.glob("*.json")}
    assert committed == set(files), "run `mdmpush deploy dashboards`"
    for name, text in files.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `mdmpush deploy dashboards`")


@pytest.mark.parametrize("board", DASHBOARDS, ids=lambda b: b.uid)
def test_dashboard_model_is_importable(board: Dashboard) -> None:
    """What Grafana needs to import it: unique panel ids, no overlapping panels, every query
    bound to the dashboard's Prometheus datasource variable."""
    model = json.loads((DASHBOARD_DIR / f"{board.uid}.json").read_text(encoding="utf-8"))
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


def test_operator_may_run_the_cli_but_not_act_as_a_service() -> None:
    """policy set (config), publish (requests), dlq replay (back to a consumed topic, ledger),
    doctor and follow (read everything): nothing else written, no service's group joined."""
    assert _allowed("operator", "topic", "mdm.push.config.v1", "Write")
    assert _allowed("operator", "topic", "mdm.notification.requests.v1", "Write")
    assert _allowed("operator", "topic", "mdm.push.jobs.bulk.v1", "Write")  # a replayed job
    assert _allowed("operator", "topic", LEDGER.name, "Create")
    assert _allowed("operator", "topic", "mdm.push.alerts.v1", "Read")
    assert not _allowed("operator", "topic", "mdm.push.alerts.v1", "Write")
    assert not _allowed("operator", "topic", STATE.name, "Write")
    assert _allowed("operator", "group", "mdmpush-dlq-ledger-0f3a9c1d", "Read")
    for group in (FanoutSettings().app_id, SenderSettings().group_id,
                  CorrelatorSettings().group_id):
        assert not _allowed("operator", "group", group, "Read")
