"""charts/bunny (AKS), read from what ``helm template`` renders: what an operator would see."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bunny.cli import build_parser
from lab import corefiles
from lab.corefiles import Role
from tests.deploy.tools import HelmError, env_of, notes, pod_spec, template

AKS = ("values-aks.yaml",)
COREDNS_PODS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
LOCALDNS = [{"ipBlock": {"cidr": "169.254.10.10/32"}}, {"ipBlock": {"cidr": "169.254.10.11/32"}}]
"""AKS LocalDNS's node-local addresses ("Configure LocalDNS in AKS", Microsoft Learn)."""
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def bunny_pod(
    values: tuple[str, ...] = (), set_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    return pod_spec(template("bunny", values, set_values).one("Deployment"))


def test_pods_ask_cross_cloud_names_first_with_ndots_2() -> None:
    """relay.private.aws.internal has 3 dots: with ndots 2 it is one query, not three
    search-list NXDOMAINs first; a one-dot in-cluster name still uses the search list."""
    spec = bunny_pod()
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["dnsConfig"] == {"options": [{"name": "ndots", "value": "2"}]}
    target_name = env_of(spec["containers"][0])["BUNNY_TARGET"].rpartition(":")[0]
    assert target_name.count(".") >= 2 > "otel-collector.observability".count(".")


def test_aks_profile_adds_resolver_options_after_ndots() -> None:
    assert bunny_pod(AKS)["dnsConfig"]["options"] == [
        {"name": "ndots", "value": "2"},
        {"name": "timeout", "value": "2"},
        {"name": "attempts", "value": "2"},
    ]


def test_bunny_sends_batches_to_the_relay_target_and_traces_to_the_collector() -> None:
    spec = bunny_pod(AKS)
    (container,) = spec["containers"]
    env = env_of(container)
    assert env["BUNNY_TARGET"] == "relay.private.aws.internal:50051"
    assert (env["BUNNY_KIND"], env["BUNNY_COUNT"], env["BUNNY_JSON"]) == ("sha256", "20", "true")
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == "http://otel-collector.observability.svc.cluster.local:4317"
    )
    assert env["OTEL_SERVICE_NAME"] == "bunny"
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    assert "bunny submit" in script
    assert "trap 'exit 0' TERM" in script
    # A batch in flight finishes before the kubelet's SIGKILL.
    assert spec["terminationGracePeriodSeconds"] > int(env["BUNNY_TIMEOUT"])


def test_every_batch_of_a_pod_exports_delta_metrics_under_the_pod_as_its_instance() -> None:
    """One process per batch: only deltas under one service.instance.id per pod add up in
    the Collector to a series that rate() sees move."""
    (container,) = bunny_pod(AKS)["containers"]
    env = env_of(container)
    assert env["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] == "delta"
    attributes = dict(pair.split("=", 1) for pair in env["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["service.instance.id"] == "$(POD_NAME)"
    names = [entry["name"] for entry in container["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    (pod_name,) = (entry for entry in container["env"] if entry["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_a_metrics_temporality_the_sdk_does_not_know_is_refused() -> None:
    with pytest.raises(HelmError, match="metricsTemporality"):
        template("bunny", AKS, {"telemetry.metricsTemporality": "deltas"})


def test_jobs_are_retried_within_their_deadline_unless_attempts_is_set() -> None:
    """bunny's default (no cap: retries until the job's deadline) is what the pod runs, so
    jobs in flight outlive a relay restart; a cap is there for whoever wants one."""
    assert "BUNNY_ATTEMPTS" not in env_of(bunny_pod(AKS)["containers"][0])
    capped = bunny_pod(AKS, {"bunny.attempts": 3})
    assert env_of(capped["containers"][0])["BUNNY_ATTEMPTS"] == "3"


def test_network_policy_lets_out_only_dns_relay_and_the_collector() -> None:
    rendered = template("bunny", AKS)
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["podSelector"] == rendered.one("Deployment")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == []
    dns, relay, collector = policy["egress"]
    assert dns["to"] == [COREDNS_PODS, *LOCALDNS]
    assert dns["ports"] == DNS_PORTS
    assert relay["to"] == [
        {"ipBlock": {"cidr": "10.100.1.0/24"}},
        {"ipBlock": {"cidr": "10.100.2.0/24"}},
    ]
    assert relay["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert collector["ports"] == [
        {"port": 4317, "protocol": "TCP"},
        {"port": 4318, "protocol": "TCP"},
    ]


def test_dns_goes_only_to_the_coredns_pods_unless_localdns_is_on() -> None:
    """Without LocalDNS a pod asks the kube-dns Service, i.e. the CoreDNS pods; with it, a
    proxy on the pod's node at link-local addresses that a pod selector cannot match."""
    (dns, *_) = template("bunny").one("NetworkPolicy")["spec"]["egress"]
    assert dns == {"to": [COREDNS_PODS], "ports": DNS_PORTS}
    (dns, *_) = template("bunny", set_values={"networkPolicy.localDns.enabled": True}).one(
        "NetworkPolicy"
    )["spec"]["egress"]
    assert dns == {"to": [COREDNS_PODS, *LOCALDNS], "ports": DNS_PORTS}


def test_localdns_alone_still_writes_a_dns_rule_with_peers() -> None:
    policy = template(
        "bunny",
        set_values={"networkPolicy.dnsPeers": [], "networkPolicy.localDns.enabled": True},
    ).one("NetworkPolicy")
    (dns, *_) = policy["spec"]["egress"]
    assert dns == {"to": LOCALDNS, "ports": DNS_PORTS}


def test_on_cilium_a_cilium_policy_adds_dns_to_the_node_for_the_same_pods() -> None:
    rendered = template(
        "bunny",
        AKS,
        {"networkPolicy.localDns.ciliumPolicy": True},
    )
    policy = rendered.one("CiliumNetworkPolicy")
    assert policy["apiVersion"] == "cilium.io/v2"
    spec = policy["spec"]
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["endpointSelector"] == {"matchLabels": selector}
    dns_ports = [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}]
    assert spec["egress"] == [
        {"toEntities": ["host"], "toPorts": dns_ports},
        {"toCIDR": ["169.254.10.10/32", "169.254.10.11/32"], "toPorts": dns_ports},
    ]
    assert "ingress" not in spec  # it must not start isolating bunny's ingress on its own


@pytest.mark.parametrize(
    "set_values",
    [
        {},
        {"networkPolicy.localDns.enabled": False, "networkPolicy.localDns.ciliumPolicy": True},
        {"networkPolicy.enabled": False, "networkPolicy.localDns.ciliumPolicy": True},
    ],
)
def test_the_cilium_policy_needs_its_switch_localdns_and_the_network_policy(
    set_values: dict[str, Any],
) -> None:
    """A CiliumNetworkPolicy fails to install where Cilium's CRDs are missing: only on request."""
    assert "CiliumNetworkPolicy" not in template("bunny", AKS, set_values).kinds()


def test_notes_warn_about_localdns_and_a_missing_policy_engine(tmp_path: Path) -> None:
    default = notes("bunny", tmp=tmp_path / "default")
    assert "networkPolicy.localDns.enabled=true" in default
    assert "network policy engine" in default
    aks = notes("bunny", AKS, tmp=tmp_path / "aks")
    assert "localDns" not in aks
    assert "network policy engine" in aks
    assert "network policy engine" not in notes(
        "bunny", set_values={"networkPolicy.enabled": False}, tmp=tmp_path / "off"
    )


def test_the_relay_port_in_the_policy_follows_the_target() -> None:
    policy = template(
        "bunny",
        AKS,
        {"bunny.target": "relay.private.aws.internal.:6000"},
    ).one("NetworkPolicy")
    assert policy["spec"]["egress"][1]["ports"] == [{"port": 6000, "protocol": "TCP"}]


def test_network_policy_never_writes_a_rule_that_allows_every_destination() -> None:
    """An egress rule with an empty "to" allows everything: with no peers there is no rule."""
    policy = template(
        "bunny",
        set_values={
            "networkPolicy.dnsPeers": [],
            "networkPolicy.relayCidrs": [],
            "networkPolicy.collectorPeers": [],
        },
    ).one("NetworkPolicy")
    assert policy["spec"]["egress"] is None or policy["spec"]["egress"] == []
    default = template("bunny").one("NetworkPolicy")  # relayCidrs empty by default
    assert all(rule["to"] for rule in default["spec"]["egress"])


def test_coredns_custom_is_the_labs_conditional_forward_for_kube_system() -> None:
    """The text the lab's cluster DNS imports, with the VNet forwarder filled in."""
    config_map = template("bunny", AKS, {"clusterDns.corednsCustom.enabled": True}).one("ConfigMap")
    assert (config_map["metadata"]["name"], config_map["metadata"]["namespace"]) == (
        "coredns-custom",
        "kube-system",
    )
    assert config_map["data"] == {
        corefiles.CONDITIONAL_FORWARD_KEY: corefiles.render(
            Role.CONDITIONAL_FORWARD, forwarder="10.224.4.4"
        )
    }


def test_coredns_custom_carries_only_its_key_and_claims_no_helm_ownership() -> None:
    """Server-side apply makes the applier the owner of every field it sends: the rendered
    object sends its one key and the labels that say what it is, nothing Helm would read
    as its own (managed-by, release annotations) and nothing another team's keys need."""
    config_map = template("bunny", AKS, {"clusterDns.corednsCustom.enabled": True}).one("ConfigMap")
    assert set(config_map) == {"apiVersion", "kind", "metadata", "data"}
    assert set(config_map["metadata"]) == {"name", "namespace", "labels"}
    labels = config_map["metadata"]["labels"]
    assert "app.kubernetes.io/managed-by" not in labels
    assert labels["app.kubernetes.io/component"] == "cluster-dns"
    assert list(config_map["data"]) == [corefiles.CONDITIONAL_FORWARD_KEY]


def test_notes_apply_coredns_custom_server_side_under_a_field_manager(tmp_path: Path) -> None:
    text = notes("bunny", AKS, tmp=tmp_path)
    assert "--show-only templates/coredns-custom.yaml |" in text
    assert "kubectl apply --server-side --field-manager=bunny-coredns-custom -f -" in text
    assert "| kubectl apply -f -" not in text
    assert "kubectl --namespace kube-system rollout restart deployment coredns" in text


def test_coredns_custom_is_never_installed_with_the_release_by_default() -> None:
    """AKS owns kube-system/coredns-custom: installing it with the release would fail on
    the existing object, so the profiles leave it to `kubectl apply`."""
    assert "ConfigMap" not in template("bunny").kinds()
    assert "ConfigMap" not in template("bunny", AKS).kinds()
    with pytest.raises(HelmError, match=r"clusterDns.corednsCustom.forwarder is required"):
        template("bunny", set_values={"clusterDns.corednsCustom.enabled": True})


def test_helm_test_runs_bunny_diagnose_over_every_configured_hop() -> None:
    rendered = template("bunny", AKS)
    pod = rendered.one("Pod", "-test-diagnose")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == [
        "bunny",
        "diagnose",
        "relay.private.aws.internal:50051",
        "--hop",
        "cluster-dns=10.0.0.10",
        "--hop",
        "forwarder=10.224.4.4",
        "--hop",
        "aws-resolver=10.100.1.10",
        "--json",
    ]
    # The diagnosis resolves the way bunny does.
    deployment = pod_spec(rendered.one("Deployment"))
    assert pod["spec"]["dnsConfig"] == deployment["dnsConfig"]


def test_without_hops_diagnose_checks_the_path_through_resolv_conf() -> None:
    (container,) = template("bunny").one("Pod")["spec"]["containers"]
    assert container["command"] == [
        "bunny",
        "diagnose",
        "relay.private.aws.internal:50051",
        "--json",
    ]


@pytest.mark.parametrize("values", [(), AKS], ids=["default", "aks"])
def test_bunny_accepts_the_command_line_the_helm_test_pod_runs(values: tuple[str, ...]) -> None:
    (container,) = template("bunny", values).one("Pod", "-test-diagnose")["spec"]["containers"]
    program, *argv = container["command"]
    assert program == "bunny"
    args = build_parser().parse_args(argv)
    assert args.command == "diagnose"
    assert args.json
