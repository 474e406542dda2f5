"""Each overlay renders with `kubectl kustomize`, validates (core objects strictly, custom
resources against their CRDs), and holds what a platform team needs for every service: probes on
the ops port, a PodDisruptionBudget, lag-based scaling within the partitions, a default-deny
network, Pod Security "restricted", scraping, and Kafka credentials as Strimzi names them."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cli.deploy_cmd import SERVICES, user_name
from services.common.catalogue import JOBS_BULK, JOBS_PRIORITY, OUTCOMES
from services.common.config_reference import direct_variables, models
from services.fanout.settings import FanoutSettings
from services.monitoring.rules import load_groups
from tests.deploy.rendering import (
    CRDS_STRIMZI_0_51,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    Doc,
    by_kind,
    crd_errors,
    crd_kinds,
    kustomize,
    rendered,
)

OPS_PORTS = {"gateway": 9100, "fanout": 9101, "sender": 9102, "correlator": 9103}
GATEWAY_API_PORT = 9400
CONSUMERS = ("fanout", "sender", "correlator")
#: The partitions one consumer group of each service can spread over.
USABLE_PARTITIONS = {"fanout": FanoutSettings().partitions,
                     "sender": max(JOBS_PRIORITY.partitions, JOBS_BULK.partitions),
                     "correlator": OUTCOMES.partitions}
APP_NAMESPACE = {"production": "mdmpush", "dev": "mdmpush-dev"}
CA_SECRET = "mdm-kafka-cluster-ca-cert"


def _container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def _env(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _is_custom(doc: Doc) -> bool:
    return (doc["apiVersion"], doc["kind"]) in crd_kinds() or doc["kind"] == "TriggerAuthentication"


def _ids(docs: list[Doc]) -> list[str]:
    return [f"{d['kind']}/{d['metadata']['name']}" for d in docs]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_strictly(overlay: str) -> None:
    core = [d for d in rendered(overlay) if not _is_custom(d)]
    assert len(core) >= 15
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_match_their_crds(overlay: str) -> None:
    custom = [d for d in rendered(overlay) if (d["apiVersion"], d["kind"]) in crd_kinds()]
    kinds = {d["kind"] for d in custom}
    assert kinds == {"KafkaTopic", "KafkaUser", "ScaledObject", "PodMonitor", "PrometheusRule"}
    errors = {name: crd_errors(d) for name, d in zip(_ids(custom), custom, strict=True)}
    assert {k: v for k, v in errors.items() if v} == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_resources_also_fit_strimzi_0_51(overlay: str) -> None:
    """Strimzi 0.51 serves v1 beside v1beta2: the same manifests serve it and 1.x clusters."""
    strimzi = [d for d in rendered(overlay) if d["apiVersion"] == "kafka.strimzi.io/v1"]
    assert len(strimzi) > 20
    errors = {name: crd_errors(d, CRDS_STRIMZI_0_51)
              for name, d in zip(_ids(strimzi), strimzi, strict=True)}
    assert {k: v for k, v in errors.items() if v} == {}


def test_crd_validation_catches_a_misspelt_field() -> None:
    """The check above can fail: Strimzi v1 has no `replicationFactor`, KEDA no `maxReplicas`."""
    topic = by_kind(rendered("production"), "KafkaTopic")["mdm-push-dlq-v1"]
    topic["spec"]["replicationFactor"] = topic["spec"].pop("replicas")
    scaled = by_kind(rendered("production"), "ScaledObject")["mdmpush-sender"]
    scaled["spec"]["maxReplicas"] = 3
    assert any("replicationFactor" in e for e in crd_errors(topic))
    assert any("maxReplicas" in e for e in crd_errors(scaled))


def test_base_names_no_namespace_and_no_registry() -> None:
    docs = [d for d in yaml.safe_load_all(kustomize(K8S / "base")) if d]
    docs += [d for d in yaml.safe_load_all(kustomize(K8S / "kafka")) if d]
    assert [n for n, d in zip(_ids(docs), docs, strict=True)
            if "namespace" in d["metadata"] or d["kind"] == "Namespace"] == []
    images = {_container(d)["image"] for d in docs if d["kind"] == "Deployment"}
    assert images == {"mdmpush"}  # a placeholder the overlays' `images:` replace


@pytest.mark.parametrize(("overlay", "image"), [
    ("production", "registry.example.com/mdmpush/mdmpush:0.1.0"), ("dev", "mdmpush:dev")])
def test_overlay_sets_namespaces_and_the_image_once(overlay: str, image: str) -> None:
    docs = rendered(overlay)
    app_ns = APP_NAMESPACE[overlay]
    for doc in docs:
        kafka_side = doc["apiVersion"].startswith("kafka.strimzi.io/")
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == app_ns
            assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert doc["metadata"]["namespace"] == ("kafka" if kafka_side else app_ns), doc
    assert {_container(d)["image"] for d in by_kind(docs, "Deployment").values()} == {image}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_objects(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = by_kind(docs, "Deployment")
    pdbs = by_kind(docs, "PodDisruptionBudget")
    users = by_kind(docs, "KafkaUser")
    assert set(deployments) == {f"mdmpush-{s}" for s in SERVICES}
    for service in SERVICES:
        name = f"mdmpush-{service}"
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert user_name(service) in users
        assert labels["app.kubernetes.io/part-of"] == "mdmpush"  # PodMonitor, NetworkPolicy
    monitors = list(by_kind(docs, "PodMonitor").values())
    assert len(monitors) == 1
    part_of = {"app.kubernetes.io/part-of": "mdmpush"}
    assert monitors[0]["spec"]["selector"]["matchLabels"] == part_of
    assert monitors[0]["spec"]["jobLabel"] == "app.kubernetes.io/name"
    assert [e["port"] for e in monitors[0]["spec"]["podMetricsEndpoints"]] == ["ops"]


@pytest.mark.parametrize("service", SERVICES)
def test_probes_and_ports(service: str) -> None:
    deployment = by_kind(rendered("production"), "Deployment")[f"mdmpush-{service}"]
    container = _container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["ops"] == OPS_PORTS[service]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert container["startupProbe"]["httpGet"]["port"] == "ops"
    env = _env(container)
    if service == "gateway":
        assert ports["http"] == GATEWAY_API_PORT
        assert env["MDMPUSH_GATEWAY_PORT"] == str(GATEWAY_API_PORT)
        assert env["MDMPUSH_GATEWAY_OPS_PORT"] == str(OPS_PORTS["gateway"])
        # Both listeners on every interface: the kubelet and Prometheus connect to the pod IP.
        assert env["MDMPUSH_GATEWAY_HOST"] == env["MDMPUSH_GATEWAY_OPS_HOST"] == "0.0.0.0"
    else:
        assert set(ports) == {"ops"}
        assert env[f"MDMPUSH_{service.upper()}_METRICS_PORT"] == str(OPS_PORTS[service])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # The drain's own bound, plus 10 s for the final flush and commit, fits the grace period.
    drain = {"sender": "MDMPUSH_SENDER_SHUTDOWN_TIMEOUT_S",
             "correlator": "MDMPUSH_CORRELATOR_CLOSE_TIMEOUT_S"}.get(service)
    if drain is not None:
        assert grace >= float(env[drain]) + 10
    assert grace >= 30


def test_gateway_service_exposes_the_api_port_only() -> None:
    service = by_kind(rendered("production"), "Service")["mdmpush-gateway"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_meet_pod_security_restricted(overlay: str) -> None:
    for name, deployment in by_kind(rendered(overlay), "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert ctx["readOnlyRootFilesystem"] is True
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], name
        assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC")), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumers_scale_on_lag_within_their_partitions(overlay: str) -> None:
    docs = rendered(overlay)
    scaled = by_kind(docs, "ScaledObject")
    auths = by_kind(docs, "TriggerAuthentication")
    assert set(scaled) == {f"mdmpush-{s}" for s in CONSUMERS}
    for service in CONSUMERS:
        spec = scaled[f"mdmpush-{service}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"mdmpush-{service}"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= \
            USABLE_PARTITIONS[service]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"].startswith(f"mdmpush-{service}")
        auth = auths[trigger["authenticationRef"]["name"]]["spec"]
        refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
        assert refs == {"password": (user_name(service), "password"),
                        "ca": (CA_SECRET, "ca.crt")}
        (env_ref,) = auth["env"]
        assert env_ref["containerName"] == service
        assert env_ref["name"] == "MDMPUSH_KAFKA_SASL_USERNAME"
    deployments = by_kind(docs, "Deployment")
    assert all("replicas" not in deployments[f"mdmpush-{s}"]["spec"] for s in CONSUMERS), \
        "KEDA owns the consumers' replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_credentials_are_the_secrets_strimzi_creates(overlay: str) -> None:
    """SASL user = KafkaUser name, password from the Secret of that name (key `password`), CA
    from `<cluster>-cluster-ca-cert` (key ca.crt), mirrored into the app namespace."""
    docs = rendered(overlay)
    users = by_kind(docs, "KafkaUser")
    for service in SERVICES:
        deployment = by_kind(docs, "Deployment")[f"mdmpush-{service}"]
        env = _env(_container(deployment))
        assert env["MDMPUSH_KAFKA_SASL_USERNAME"] == user_name(service)
        assert env["MDMPUSH_KAFKA_SASL_PASSWORD"] == {
            "secretKeyRef": {"name": user_name(service), "key": "password"}}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == CA_SECRET
        user = users[user_name(service)]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "mdm-kafka"
        annotations = user["spec"]["template"]["secret"]["metadata"]["annotations"]
        assert annotations["reflector.v1.k8s.emberstack.com/reflection-auto-namespaces"] == \
            APP_NAMESPACE[overlay]
    config = by_kind(docs, "ConfigMap")["mdmpush-kafka"]["data"]
    assert config["MDMPUSH_KAFKA_SSL_CA_LOCATION"] == "/etc/mdmpush/kafka-ca/ca.crt"
    assert config["MDMPUSH_KAFKA_BOOTSTRAP_SERVERS"].startswith("mdm-kafka-kafka-bootstrap.kafka.")


@pytest.mark.parametrize(("overlay", "replicas", "min_insync"), [("production", 3, 2),
                                                                  ("dev", 1, 1)])
def test_topics_and_internal_topics_are_replicated(overlay: str, replicas: int,
                                                   min_insync: int) -> None:
    docs = rendered(overlay)
    topics = by_kind(docs, "KafkaTopic").values()
    assert {(t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"])
            for t in topics} == {(replicas, str(min_insync))}
    config = by_kind(docs, "ConfigMap")["mdmpush-kafka"]["data"]
    assert config["MDMPUSH_KAFKA_REPLICATION_FACTOR"] == str(replicas)
    assert config["MDMPUSH_KAFKA_MIN_INSYNC_REPLICAS"] == str(min_insync)


def test_network_is_default_deny_with_named_exceptions() -> None:
    policies = by_kind(rendered("production"), "NetworkPolicy")
    deny = policies["mdmpush-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    egress_ports: set[tuple[str, int | str]] = set()
    ingress_ports: set[int | str] = set()
    for policy in policies.values():
        for rule in policy["spec"].get("egress", []):
            egress_ports |= {(p["protocol"], p["port"]) for p in rule["ports"]}
        for rule in policy["spec"].get("ingress", []):
            ingress_ports |= {p["port"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 9093), ("TCP", 443), ("TCP", 2197)}
    assert ingress_ports == {"http", "ops"}
    apns = policies["mdmpush-sender-apns"]["spec"]
    assert apns["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mdmpush-sender"}
    metrics = policies["mdmpush-metrics-from-monitoring"]["spec"]["ingress"][0]["from"]
    assert metrics == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]


def test_observability_objects_for_kube_prometheus_stack() -> None:
    docs = rendered("production")
    rule = by_kind(docs, "PrometheusRule")["mdmpush"]
    assert rule["spec"]["groups"] == load_groups()
    dashboards = by_kind(docs, "ConfigMap")["mdmpush-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(dashboards["data"]) == {"mdmpush-delivery.json", "mdmpush-arrival.json"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_the_manifests_set_is_a_setting(overlay: str) -> None:
    """A renamed or removed setting breaks this, not a pod that silently ignores its variable
    (settings models ignore unknown variables)."""
    known = {s.variable for model in models() for s in model.settings}
    known |= {d.variable for d in direct_variables()}
    docs = rendered(overlay)
    used = set(by_kind(docs, "ConfigMap")["mdmpush-kafka"]["data"])
    for deployment in by_kind(docs, "Deployment").values():
        used |= set(_env(_container(deployment)))
    for auth in by_kind(docs, "TriggerAuthentication").values():
        used |= {ref["name"] for ref in auth["spec"]["env"]}
    assert len(used) > 15
    assert sorted(used - known) == []
