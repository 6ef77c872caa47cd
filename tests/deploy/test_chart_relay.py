"""charts/relay (EKS), read from what ``helm template`` renders: what an operator would see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab import corefiles
from lab.corefiles import Role
from tests.deploy.tools import HelmError, env_of, notes, pod_spec, template

EKS = ("values-eks.yaml",)


def relay_container(
    set_values: dict[str, Any] | None = None, values: tuple[str, ...] = ()
) -> dict[str, Any]:
    deployment = template("relay", values, set_values).one("Deployment")
    (container,) = pod_spec(deployment)["containers"]
    assert container["name"] == "relay"
    return dict(container)


def test_probes_are_native_grpc_health_checks_on_relays_port() -> None:
    container = relay_container({"relay.port": 6000})
    assert container["ports"] == [{"name": "grpc", "containerPort": 6000, "protocol": "TCP"}]
    assert env_of(container)["RELAY_LISTEN"] == "0.0.0.0:6000"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) == {
            "grpc",
            "periodSeconds",
            "failureThreshold",
            "timeoutSeconds",
        }, probe
        assert container[probe]["grpc"] == {"port": 6000}, probe


@pytest.mark.parametrize(
    ("values", "set_values", "expected"),
    [
        ((), {}, 30),  # preStop 5 + grace 20 + 5
        (EKS, {}, 40),  # the NLB profile keeps serving 15 s before draining
        ((), {"relay.gracePeriodSeconds": 60}, 70),
    ],
)
def test_termination_grace_outlasts_prestop_and_relays_whole_drain(
    values: tuple[str, ...], set_values: dict[str, Any], expected: int
) -> None:
    """The kubelet must not SIGKILL relay mid-drain: the grace period covers the preStop
    sleep, relay's --grace-period and the 3 s relay may take after it, with room to spare."""
    rendered = template("relay", values, set_values)
    spec = pod_spec(rendered.one("Deployment"))
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = int(env_of(container)["RELAY_GRACE_PERIOD"])
    assert spec["terminationGracePeriodSeconds"] == expected
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 3 + 2


@pytest.mark.parametrize(
    ("set_values", "budget"),
    [
        ({"replicaCount": 1}, False),
        ({"replicaCount": 2}, True),
        ({"autoscaling.enabled": True, "autoscaling.minReplicas": 1}, False),
        ({"autoscaling.enabled": True, "autoscaling.minReplicas": 3}, True),
    ],
)
def test_a_disruption_budget_exists_only_when_more_than_one_pod_runs(
    set_values: dict[str, Any], budget: bool
) -> None:
    rendered = template("relay", set_values=set_values)
    assert ("PodDisruptionBudget" in rendered.kinds()) is budget
    if budget:
        pdb = rendered.one("PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == rendered.one("Deployment")["spec"]["selector"]


def test_the_autoscaler_owns_the_replica_count_when_enabled() -> None:
    rendered = template("relay", EKS)
    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rel-relay",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert "replicas" not in rendered.one("Deployment")["spec"]
    assert "HorizontalPodAutoscaler" not in template("relay").kinds()


def test_pods_spread_over_zones_then_nodes() -> None:
    rendered = template("relay")
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    spread = pod_spec(rendered.one("Deployment"))["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for constraint in spread:
        assert constraint["labelSelector"] == {"matchLabels": selector}
        assert constraint["maxSkew"] == 1
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


def test_network_policy_admits_only_the_tunnel_the_nlb_and_in_cluster_callers_on_grpc() -> None:
    rendered = template("relay", EKS)
    policy = rendered.one("NetworkPolicy")["spec"]
    assert policy["podSelector"] == rendered.one("Deployment")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 50051, "protocol": "TCP"}]
    assert rule["from"] == [
        {"ipBlock": {"cidr": "10.224.0.0/16"}},
        {"ipBlock": {"cidr": "10.100.1.0/24"}},
        {"ipBlock": {"cidr": "10.100.2.0/24"}},
        {"namespaceSelector": {}},
    ]


def test_network_policy_with_no_callers_admits_nobody_rather_than_everybody() -> None:
    """An ingress rule with an empty "from" admits every source: none may be rendered."""
    policy = template(
        "relay",
        set_values={
            "networkPolicy.tunnelCidrs": [],
            "networkPolicy.clusterPeers": [],
        },
    ).one("NetworkPolicy")
    assert policy["spec"]["ingress"] == []
    assert (
        "NetworkPolicy"
        not in template("relay", set_values={"networkPolicy.enabled": False}).kinds()
    )


def test_by_default_relay_is_a_cluster_ip_service_speaking_h2c() -> None:
    service = template("relay").one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert "annotations" not in service["metadata"]
    assert service["spec"]["ports"] == [
        {
            "name": "grpc",
            "port": 50051,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]


def test_eks_profile_puts_relay_behind_an_internal_nlb_published_in_route53() -> None:
    rendered = template("relay", EKS)
    service = rendered.one("Service")
    annotations = service["metadata"]["annotations"]
    grace = pod_spec(rendered.one("Deployment"))["terminationGracePeriodSeconds"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert service["spec"]["loadBalancerSourceRanges"] == ["10.224.0.0/16", "10.100.0.0/16"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    attributes = annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    assert attributes.split(",") == [
        f"deregistration_delay.timeout_seconds={grace}",
        "preserve_client_ip.enabled=true",
    ]
    assert (
        annotations["service.beta.kubernetes.io/aws-load-balancer-subnets"]
        == "subnet-0123456789abcdef0,subnet-0123456789abcdef1"
    )
    assert "service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses" not in annotations
    # ExternalDNS 0.22 reads only the GA prefix, earlier releases only the alpha one.
    for prefix in ("external-dns.kubernetes.io/", "external-dns.alpha.kubernetes.io/"):
        assert annotations[f"{prefix}hostname"] == "relay.private.aws.internal"
        assert annotations[f"{prefix}ttl"] == "60"


SUBNETS = [
    {"id": "subnet-aaa", "cidr": "10.8.1.0/24", "privateIPv4Address": "10.8.1.20"},
    {"id": "private-b", "cidr": "10.8.2.0/24", "privateIPv4Address": "10.8.2.20"},
]


def test_the_nlb_goes_into_the_subnets_the_network_policy_admits_it_from() -> None:
    """One value places the NLB (the controller's subnets and fixed addresses) and admits
    its health checks (the policy's ipBlocks): the two cannot name different subnets."""
    rendered = template(
        "relay",
        EKS,
        {"service.awsLoadBalancer.subnets": SUBNETS, "networkPolicy.clusterPeers": []},
    )
    annotations = rendered.one("Service")["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-subnets"] == (
        "subnet-aaa,private-b"
    )
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-private-ipv4-addresses"] == (
        "10.8.1.20,10.8.2.20"
    )
    (rule,) = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["from"] == [
        {"ipBlock": {"cidr": "10.224.0.0/16"}},
        {"ipBlock": {"cidr": "10.8.1.0/24"}},
        {"ipBlock": {"cidr": "10.8.2.0/24"}},
    ]


def test_an_nlb_behind_a_network_policy_needs_its_subnets() -> None:
    """Subnets the controller discovers would be ones the policy does not admit: the NLB's
    health checks would fail and every target would stay unhealthy."""
    with pytest.raises(HelmError, match=r"service.awsLoadBalancer.subnets is required"):
        template("relay", EKS, {"service.awsLoadBalancer.subnets": []})
    service = template(
        "relay", EKS, {"service.awsLoadBalancer.subnets": [], "networkPolicy.enabled": False}
    ).one("Service")
    assert (
        "service.beta.kubernetes.io/aws-load-balancer-subnets"
        not in (service["metadata"]["annotations"])
    )


def test_fixed_nlb_addresses_are_given_for_every_subnet_or_none() -> None:
    with pytest.raises(HelmError, match=r"privateIPv4Address for every subnet or for none"):
        template(
            "relay",
            EKS,
            {"service.awsLoadBalancer.subnets": [SUBNETS[0], {"id": "b", "cidr": "10.8.2.0/24"}]},
        )


def test_without_the_nlb_its_subnets_are_neither_annotated_nor_admitted() -> None:
    rendered = template(
        "relay",
        set_values={"service.awsLoadBalancer.subnets": SUBNETS, "networkPolicy.clusterPeers": []},
    )
    assert "annotations" not in rendered.one("Service")["metadata"]
    assert rendered.one("NetworkPolicy")["spec"]["ingress"] == []


def test_a_route53_name_without_the_nlb_is_refused() -> None:
    with pytest.raises(
        HelmError, match=r"service.externalDns.hostname needs service.awsLoadBalancer"
    ):
        template("relay", set_values={"service.externalDns.hostname": "relay.private.aws.internal"})


def test_eks_coredns_change_is_the_labs_aws_resolver_block() -> None:
    """The same text the lab's AWS resolver and the compose stack run, with the VPC
    resolver filled in, added to EKS's Corefile as the add-on's configuration."""
    config_map = template("relay", EKS).one("ConfigMap", "-coredns-eks")
    block = corefiles.render(Role.AWS_RESOLVER, zone_server="10.100.0.2:53")
    assert config_map["data"]["private-aws-internal.server"] == block
    corefile = json.loads(config_map["data"]["configuration-values.json"])["corefile"]
    default, _, added = corefile.partition("\n}\n")  # EKS's server block ends at column 0
    assert default.startswith(".:53 {\n")
    assert "forward . /etc/resolv.conf" in default
    assert added == block


def test_the_eks_coredns_change_needs_the_vpc_resolver() -> None:
    with pytest.raises(HelmError, match=r"clusterDns.eksAddon.vpcResolver is required"):
        template("relay", set_values={"clusterDns.eksAddon.enabled": True})
    assert "ConfigMap" not in template("relay").kinds()


def test_helm_test_checks_health_and_runs_an_echo_job_through_the_service() -> None:
    pod = template("relay").one("Pod", "-test-grpc")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    health, job = pod["spec"]["containers"]
    assert health["command"] == [
        "python",
        "-m",
        "bunnyrelay.healthcheck",
        "rel-relay.ns.svc.cluster.local:50051",
    ]
    assert job["command"][:4] == [
        "bunny",
        "submit",
        "--target",
        "rel-relay.ns.svc.cluster.local.:50051",
    ]
    assert job["command"][4:6] == ["--kind", "echo"]


def test_relay_names_itself_after_its_pod_and_exports_telemetry_when_asked() -> None:
    container = relay_container(values=EKS)
    env = env_of(container)
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["OTEL_SERVICE_NAME"] == "relay"
    assert (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        == "http://otel-collector.observability.svc.cluster.local:4317"
    )
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_RESOURCE_ATTRIBUTES"].startswith("k8s.pod.name=$(POD_NAME),")
    assert env["OTEL_RESOURCE_ATTRIBUTES"].endswith(
        ",cloud.provider=aws,deployment.environment.name=production,cloud.region=eu-west-1"
    )
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_of(relay_container())


def test_image_is_the_app_version_unless_a_tag_or_digest_is_given() -> None:
    assert relay_container()["image"] == "ghcr.io/bunny-relay/relay:0.1.0"
    assert relay_container({"image.tag": "1.2.3"})["image"] == "ghcr.io/bunny-relay/relay:1.2.3"
    digest = "sha256:" + "ab" * 32
    assert (
        relay_container({"image.digest": digest})["image"] == f"ghcr.io/bunny-relay/relay@{digest}"
    )


def test_the_idempotency_store_lives_in_a_state_volume_beside_a_read_only_root() -> None:
    rendered = template("relay", set_values={"relay.store": "redis://redis.relay.svc:6379/0"})
    spec = pod_spec(rendered.one("Deployment"))
    (container,) = spec["containers"]
    env = env_of(container)
    assert env["RELAY_STORE"] == "redis://redis.relay.svc:6379/0"
    assert env["RELAY_STATE_DIR"] == "/var/lib/relay"
    assert env_of(relay_container())["RELAY_STORE"] == "sqlite:jobs.sqlite3"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/var/lib/relay"]]["emptyDir"] == {"sizeLimit": "256Mi"}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_notes_name_the_nlb_subnets_and_the_policy_switch(tmp_path: Path) -> None:
    text = notes("relay", EKS, tmp=tmp_path / "eks")
    assert (
        "in subnets subnet-0123456789abcdef0 (10.100.1.0/24), "
        "subnet-0123456789abcdef1 (10.100.2.0/24):"
    ) in text
    assert 'enableNetworkPolicy: "true"' in text
    assert "enableNetworkPolicy" not in notes(
        "relay", set_values={"networkPolicy.enabled": False}, tmp=tmp_path / "off"
    )
