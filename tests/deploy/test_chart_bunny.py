"""charts/bunny (AKS), read from what ``helm template`` renders: what an operator would see."""

from __future__ import annotations

from typing import Any

import pytest

from bunny.cli import build_parser
from lab import corefiles
from lab.corefiles import Role
from tests.deploy.tools import HelmError, env_of, pod_spec, template

AKS = ("values-aks.yaml",)


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
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    assert relay["to"] == [
        {"ipBlock": {"cidr": "10.100.1.0/24"}},
        {"ipBlock": {"cidr": "10.100.2.0/24"}},
    ]
    assert relay["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert collector["ports"] == [
        {"port": 4317, "protocol": "TCP"},
        {"port": 4318, "protocol": "TCP"},
    ]


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
