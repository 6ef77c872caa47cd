"""Both charts sent to a real Kubernetes API server (tests/e2e/cluster.py says what its
kwok nodes prove and what they do not).

Each test installs into namespaces of its own that enforce the "restricted" Pod Security
Standard (and warn and audit at it), so a warning is as visible as a rejection. The API
server's admission is shown to be real by a values override that breaks the standard.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster import (
    CERT_MANAGER_CRDS,
    PROMETHEUS_OPERATOR_CRDS,
    RESTRICTED,
    Cluster,
    require,
)
from tests.e2e.engine import ROOT, unique

pytestmark = pytest.mark.timeout(300)

CHARTS = ROOT / "charts"
PROFILES = {"relay": "values-eks.yaml", "bunny": "values-aks.yaml"}
KUBERNETES_VERSION = "v1.36.3"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        started = cluster.script("up")
        assert started.returncode == 0, started.stdout + started.stderr
        yield cluster
    finally:
        stopped = cluster.script("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def chart_args(chart: str, *extra: str) -> list[str]:
    return [str(CHARTS / chart), "--values", str(CHARTS / chart / PROFILES[chart]), *extra]


def install(cluster: Cluster, chart: str, namespace: str, *extra: str) -> str:
    """``helm install`` (no --wait: see the EKS LoadBalancer test); what Helm printed on
    standard error, where the API server's warnings go."""
    result = cluster.helm("install", chart, *chart_args(chart, *extra), "--namespace", namespace)
    cluster.ok(result)
    return result.stderr


def restricted_namespace(cluster: Cluster, chart: str) -> str:
    return cluster.namespace(unique(f"{chart}-e2e"), RESTRICTED)


def rollout(cluster: Cluster, chart: str, namespace: str, replicas: int) -> dict[str, object]:
    """Wait until the chart's Deployment has ``replicas`` available pods; the Deployment."""
    deadline = time.monotonic() + 120
    while True:
        deployment = cluster.get("deployment", chart, "--namespace", namespace)
        status = deployment.get("status", {})
        if status.get("availableReplicas") == replicas == status.get("updatedReplicas"):
            return deployment
        assert time.monotonic() < deadline, json.dumps(status)
        time.sleep(0.5)


def test_the_api_server_is_kubernetes_1_36_with_ready_nodes_in_three_zones(
    cluster: Cluster,
) -> None:
    version = json.loads(cluster.ok(cluster.kubectl("version", "--output", "json")))
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    nodes = cluster.get("nodes")["items"]
    zones = {node["metadata"]["labels"]["topology.kubernetes.io/zone"] for node in nodes}
    assert len(zones) == 3
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", node["metadata"]["name"]


@pytest.mark.parametrize("chart", PROFILES)
def test_the_chart_installs_into_a_restricted_namespace_without_a_warning(
    cluster: Cluster, chart: str
) -> None:
    namespace = restricted_namespace(cluster, chart)
    warnings = install(cluster, chart, namespace)
    assert "warning" not in warnings.lower(), warnings
    replicas = 3 if chart == "relay" else 1  # relay's profile: an autoscaler from 3
    rollout(cluster, chart, namespace, replicas)
    pods = cluster.get("pods", "--namespace", namespace)["items"]
    assert len(pods) == replicas
    if chart == "relay":
        # Spread over the zones by the chart's topology constraints.
        nodes = {pod["spec"]["nodeName"] for pod in pods}
        assert len(nodes) == 3, nodes


@pytest.mark.parametrize(
    ("chart", "extra"),
    [
        ("relay", ()),
        ("bunny", ()),
        ("bunny", ("--set", "clusterDns.corednsCustom.enabled=true")),
    ],
)
def test_every_rendered_object_passes_the_servers_strict_dry_run(
    cluster: Cluster, chart: str, extra: tuple[str, ...]
) -> None:
    namespace = restricted_namespace(cluster, chart)
    rendered = cluster.ok(
        cluster.helm("template", chart, *chart_args(chart, *extra), "--namespace", namespace)
    )
    kinds = {doc["kind"] for doc in map(_load, rendered.split("\n---\n")) if doc}
    assert "Deployment" in kinds
    assert "Pod" in kinds  # the helm test hook is validated too
    result = cluster.kubectl(
        # Each object names its namespace (the chart's, or kube-system for coredns-custom).
        "apply", "--server-side", "--dry-run=server", "--validate=strict", "--filename", "-",
        stdin=rendered,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert result.stdout.count("serverside-applied (server dry run)") == len(
        [d for d in rendered.split("\n---\n") if _load(d)]
    ), result.stdout


def _load(text: str) -> dict[str, object] | None:
    doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else None


def test_an_override_that_breaks_restricted_is_refused_by_admission(cluster: Cluster) -> None:
    namespace = restricted_namespace(cluster, "relay")
    warnings = install(
        cluster, "relay", namespace, "--set", "securityContext.allowPrivilegeEscalation=true"
    )
    # Helm prints the API server's warning quoted, in a log line.
    assert r"would violate PodSecurity \"restricted:latest\"" in warnings, warnings
    assert "allowPrivilegeEscalation != false" in warnings

    def refusal() -> str | None:
        for replica_set in cluster.get("replicasets", "--namespace", namespace)["items"]:
            for condition in replica_set.get("status", {}).get("conditions", []):
                if condition["type"] == "ReplicaFailure":
                    return str(condition["message"])
        return None

    deadline = time.monotonic() + 60
    while (message := refusal()) is None:
        assert time.monotonic() < deadline, "no ReplicaFailure"
        time.sleep(0.5)
    assert 'violates PodSecurity "restricted:latest"' in message, message
    assert cluster.get("pods", "--namespace", namespace)["items"] == []


def test_tls_needs_cert_managers_crds_and_passes_with_them(cluster: Cluster) -> None:
    namespace = restricted_namespace(cluster, "relay")
    tls = ("--set", "tls.enabled=true", "--set", "tls.certManager.issuerRef.name=bunny-relay-ca")
    refused = cluster.helm("install", "relay", *chart_args("relay", *tls), "-n", namespace)
    assert refused.returncode != 0
    assert 'no matches for kind "Certificate" in version "cert-manager.io/v1"' in refused.stderr

    cluster.ok(cluster.kubectl("apply", "--filename", str(require(CERT_MANAGER_CRDS))))
    cluster.ok(
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io",
        )
    )  # fmt: skip
    for chart in PROFILES:
        chart_namespace = namespace if chart == "relay" else restricted_namespace(cluster, chart)
        rendered = cluster.ok(
            cluster.helm(
                "template", chart, *chart_args(chart, *tls), "--namespace", chart_namespace
            )
        )
        dry_run = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--validate=strict", "--filename", "-",
            stdin=rendered,
        )  # fmt: skip
        assert dry_run.returncode == 0, dry_run.stderr
        warnings = install(cluster, chart, chart_namespace, *tls)
        assert "warning" not in warnings.lower(), warnings
        certificates = cluster.get("certificates", "--namespace", chart_namespace)["items"]
        assert certificates, chart
        for certificate in certificates:
            assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always"


def test_a_rolling_upgrade_keeps_every_pod_and_the_budget_refuses_a_second_eviction(
    cluster: Cluster,
) -> None:
    namespace = restricted_namespace(cluster, "relay")
    install(cluster, "relay", namespace)
    rollout(cluster, "relay", namespace, 3)

    upgraded = cluster.helm(
        "upgrade", "relay", *chart_args("relay", "--set", "podAnnotations.rollout=second"),
        "--namespace", namespace,
    )  # fmt: skip
    cluster.ok(upgraded)
    lowest = 3
    deadline = time.monotonic() + 120
    while True:
        status = cluster.get("deployment", "relay", "--namespace", namespace)["status"]
        lowest = min(lowest, status.get("availableReplicas", 0))
        if status.get("updatedReplicas") == 3 == status.get("availableReplicas") and (
            status.get("replicas") == 3
        ):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert lowest == 3, "a pod was taken away before its replacement was ready"

    def budget() -> dict[str, int]:
        return dict(cluster.get("pdb", "relay", "--namespace", namespace).get("status", {}))

    deadline = time.monotonic() + 60
    while budget().get("disruptionsAllowed") != 1 or budget().get("currentHealthy") != 3:
        assert time.monotonic() < deadline, budget()
        time.sleep(0.5)
    # As a node drain does: cordoned nodes, so an evicted pod's replacement waits (under
    # kwok it would otherwise be ready at once and the budget would never be short).
    nodes = [n["metadata"]["name"] for n in cluster.get("nodes")["items"]]
    cluster.ok(cluster.kubectl("cordon", *nodes))
    try:
        pods = [p["metadata"]["name"] for p in cluster.get("pods", "-n", namespace)["items"]]
        first, second = (evict(cluster, namespace, pod) for pod in pods[:2])
    finally:
        cluster.ok(cluster.kubectl("uncordon", *nodes))
    assert first.returncode == 0, first.stderr
    assert second.returncode != 0
    assert "would violate the pod's disruption budget" in second.stderr, second.stderr


def evict(cluster: Cluster, namespace: str, pod: str) -> subprocess.CompletedProcess[str]:
    """Ask the Eviction API to evict ``pod``, as ``kubectl drain`` does."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    }
    return cluster.kubectl(
        "create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction",
        "--filename", "-",
        stdin=json.dumps(eviction),
    )  # fmt: skip


def test_the_coredns_custom_configmap_joins_kube_system_keeping_other_keys(
    cluster: Cluster,
) -> None:
    # AKS owns kube-system/coredns-custom, and other teams may keep keys in it.
    existing = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
        "data": {"another-team.server": "example.internal:53 {\n    forward . 10.1.2.3\n}\n"},
    }
    cluster.ok(cluster.kubectl("create", "--filename", "-", stdin=json.dumps(existing)))
    try:
        rendered = cluster.ok(
            cluster.helm(
                "template", "bunny",
                *chart_args("bunny", "--set", "clusterDns.corednsCustom.enabled=true"),
                "--show-only", "templates/coredns-custom.yaml",
            )
        )  # fmt: skip
        cluster.ok(cluster.kubectl("apply", "--filename", "-", stdin=rendered))
        data = cluster.get("configmap", "coredns-custom", "--namespace", "kube-system")["data"]
        assert set(data) == {"another-team.server", "private-aws-internal.server"}
        assert "forward . 10.224.4.4" in data["private-aws-internal.server"]
    finally:
        cluster.kubectl("delete", "configmap", "coredns-custom", "--namespace", "kube-system")


@pytest.mark.parametrize("chart", PROFILES)
def test_helm_test_runs_the_charts_test_pod_to_success(cluster: Cluster, chart: str) -> None:
    namespace = restricted_namespace(cluster, chart)
    install(cluster, chart, namespace)
    result = cluster.helm("test", chart, "--namespace", namespace, "--timeout", "120s")
    output = cluster.ok(result)
    assert "Phase:          Succeeded" in output, output
    assert "warning" not in result.stderr.lower(), result.stderr


def test_helm_install_wait_on_the_eks_profile_waits_for_a_load_balancer_address(
    cluster: Cluster,
) -> None:
    """Documented in docs/deploy.md: without the AWS Load Balancer Controller nothing gives
    relay's LoadBalancer Service an address, and ``helm install --wait`` waits for one."""
    namespace = restricted_namespace(cluster, "relay")
    result = cluster.helm(
        "install", "relay", *chart_args("relay"), "--namespace", namespace,
        "--wait", "--timeout", "20s",
    )  # fmt: skip
    assert result.returncode != 0
    assert "context deadline exceeded" in result.stderr, result.stderr
    rollout(cluster, "relay", namespace, 3)  # every pod is up all the same
    service = cluster.get("service", "relay", "--namespace", namespace)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["status"]["loadBalancer"] == {}


def test_starting_a_cluster_that_runs_says_so_and_succeeds(cluster: Cluster) -> None:
    again = cluster.script("up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    cluster.ok(cluster.kubectl("get", "--raw", "/readyz"))


def test_a_start_that_fails_stops_what_it_started(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster")
    # No time at all to become healthy: the first wait fails, after etcd has started.
    failed = cluster.script("up", START_TIMEOUT="0")
    assert failed.returncode != 0
    assert "not within 0 s" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    assert cluster.processes() == []
    assert not cluster.directory.exists()


def test_stopping_with_no_cluster_running_succeeds(tmp_path: Path) -> None:
    stopped = Cluster(tmp_path / "cluster").script("down")
    assert stopped.returncode == 0, stopped.stderr
    assert "no cluster was running" in stopped.stdout


MONITORING_ON = (
    "--set", "monitoring.dashboards.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true",
    "--set", "monitoring.serviceMonitor.enabled=true",
    "--set", "monitoring.serviceMonitor.selector.app=otel-collector",
)  # fmt: skip


def test_monitoring_waits_for_the_prometheus_operators_crds_then_is_made(
    cluster: Cluster,
) -> None:
    """Helm asks this API server what it serves: without the operator's CRDs the charts
    install without their PrometheusRule and ServiceMonitor; with them, both are made, and
    the API server accepts them against the CRDs' schemas."""
    for chart in PROFILES:
        namespace = restricted_namespace(cluster, chart)
        install(cluster, chart, namespace, *MONITORING_ON)
        manifest = cluster.ok(cluster.helm("get", "manifest", chart, "--namespace", namespace))
        kinds = {doc["kind"] for doc in yaml.safe_load_all(manifest) if doc}
        assert "ConfigMap" in kinds, kinds
        assert not {"PrometheusRule", "ServiceMonitor"} & kinds, kinds

    cluster.ok(cluster.kubectl("apply", "--filename", str(require(PROMETHEUS_OPERATOR_CRDS))))
    cluster.ok(
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/prometheusrules.monitoring.coreos.com",
            "crd/servicemonitors.monitoring.coreos.com",
        )
    )  # fmt: skip
    for chart in PROFILES:
        namespace = restricted_namespace(cluster, chart)
        rendered = cluster.ok(
            cluster.helm(
                "template", chart, *chart_args(chart, *MONITORING_ON), "--namespace", namespace,
                "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
            )
        )  # fmt: skip
        dry_run = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--validate=strict", "--filename", "-",
            stdin=rendered,
        )  # fmt: skip
        assert dry_run.returncode == 0, dry_run.stderr
        warnings = install(cluster, chart, namespace, *MONITORING_ON)
        assert "warning" not in warnings.lower(), warnings
        (rule,) = cluster.get("prometheusrules", "--namespace", namespace)["items"]
        alerts = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
        assert alerts, rule
        (monitor,) = cluster.get("servicemonitors", "--namespace", namespace)["items"]
        assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
