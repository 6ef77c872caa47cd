"""Both charts, checked by the tools a user's cluster and CI would use.

- ``helm lint --strict`` with every profile;
- every object ``helm template`` renders, for the default, AKS and EKS values, validated
  strictly (an unknown field is an error) against the Kubernetes schemas of each version
  in ``KUBERNETES_VERSIONS``, offline;
- every pod admitted by the "restricted" Pod Security Standard, as the PodSecurity
  admission library decides it;
- values.schema.json rejecting a wrong value with a message that names it, and covering
  (and values.yaml documenting) every value.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    CHARTS,
    KUBERNETES_VERSIONS,
    HelmError,
    Rendered,
    helm,
    kubeconform,
    pod_security,
    template,
)

PROFILES: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "relay-default": ("relay", (), {}),
    "relay-eks": ("relay", ("values-eks.yaml",), {}),
    "bunny-default": ("bunny", (), {}),
    "bunny-aks": ("bunny", ("values-aks.yaml",), {}),
    # What a cluster admin renders for `kubectl apply` (kube-system/coredns-custom).
    "bunny-aks-coredns-custom": (
        "bunny",
        ("values-aks.yaml",),
        {"clusterDns.corednsCustom.enabled": True},
    ),
}
WORKLOADS = {"Deployment", "Pod"}


def render(profile: str, kube_version: str = KUBERNETES_VERSIONS[-1]) -> Rendered:
    chart, values_files, set_values = PROFILES[profile]
    return template(chart, values_files, set_values, kube_version=kube_version)


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_strict_passes(profile: str) -> None:
    chart, values_files, set_values = PROFILES[profile]
    args = ["lint", "--strict", str(CHARTS / chart), "--kube-version", KUBERNETES_VERSIONS[-1]]
    for values_file in values_files:
        args += ["--values", str(CHARTS / chart / values_file)]
    for key, value in set_values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in output
    assert "[WARNING]" not in output, output
    assert "[ERROR]" not in output, output


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_rendered_object_is_valid_kubernetes(profile: str, kube_version: str) -> None:
    rendered = render(profile, kube_version)
    result = kubeconform(rendered.text, kube_version)
    report = json.loads(result.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert problems == [], json.dumps(problems, indent=1)
    assert result.returncode == 0, result.stderr
    assert report["summary"]["valid"] == len(rendered.objects) > 0
    assert report["summary"]["skipped"] == 0


def test_validation_is_strict_about_unknown_fields() -> None:
    """The offline schemas are the strict ones: a misspelt field is an error, not ignored."""
    deployment = render("relay-default").one("Deployment")
    deployment = json.loads(json.dumps(deployment))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    result = kubeconform(yaml.safe_dump(deployment), KUBERNETES_VERSIONS[0])
    assert result.returncode == 1
    assert "additional properties 'readinessProbes' not allowed" in result.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pod_passes_the_restricted_pod_security_standard(profile: str) -> None:
    verdicts = pod_security(render(profile).text)
    assert {v["object"].split("/")[0] for v in verdicts} == WORKLOADS  # the app and its test
    assert [v for v in verdicts if not v["allowed"]] == []


def test_a_weakened_security_context_is_caught() -> None:
    rendered = template("relay", set_values={"securityContext.allowPrivilegeEscalation": True})
    verdicts = {v["object"]: v for v in pod_security(rendered.text)}
    deployment = verdicts["Deployment/rel-relay"]
    assert not deployment["allowed"]
    assert [v["reason"] for v in deployment["violations"]] == ["allowPrivilegeEscalation != false"]


def _pod_templates(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in rendered.objects:
        if obj["kind"] == "Deployment":
            yield obj["metadata"]["name"], obj["spec"]["template"]
        elif obj["kind"] == "Pod":
            yield obj["metadata"]["name"], obj


@pytest.mark.parametrize("profile", PROFILES)
def test_every_object_and_pod_carries_the_standard_labels(profile: str) -> None:
    chart = PROFILES[profile][0]
    rendered = render(profile)
    labelled = [(o["kind"], o["metadata"]) for o in rendered.objects]
    labelled += [("pod of " + name, pod["metadata"]) for name, pod in _pod_templates(rendered)]
    for what, metadata in labelled:
        labels = metadata["labels"]
        assert labels["app.kubernetes.io/name"] == chart, what
        assert labels["app.kubernetes.io/instance"] == "rel", what
        assert labels["app.kubernetes.io/version"] == "0.1.0", what
        # AKS's coredns-custom is applied with kubectl, never installed by the release.
        applied = (metadata.get("namespace"), metadata.get("name")) == (
            "kube-system",
            "coredns-custom",
        )
        assert labels.get("app.kubernetes.io/managed-by") == (None if applied else "Helm"), what
        assert labels["app.kubernetes.io/part-of"] == "bunny-relay", what
        assert labels["helm.sh/chart"] == f"{chart}-0.1.0", what


@pytest.mark.parametrize("profile", PROFILES)
def test_test_pods_are_not_selected_by_the_apps_own_selectors(profile: str) -> None:
    """A ReplicaSet adopts any bare pod its selector matches, and a NetworkPolicy applies
    to any pod its podSelector matches: the helm test pod must match neither."""
    rendered = render(profile)
    test_pod = next(o for o in rendered.objects if o["kind"] == "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    labels = test_pod["metadata"]["labels"].items()
    selectors = [rendered.one("Deployment")["spec"]["selector"]["matchLabels"]]
    selectors += [
        o["spec"]["podSelector"]["matchLabels"]
        for o in rendered.objects
        if o["kind"] == "NetworkPolicy"
    ]
    for selector in selectors:
        assert not selector.items() <= labels, selector


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_mount_no_token_and_every_container_has_requests_and_limits(profile: str) -> None:
    rendered = render(profile)
    for account in (o for o in rendered.objects if o["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    for name, pod in _pod_templates(rendered):
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["runAsUser"] == spec["securityContext"]["runAsUser"] == 10001
            assert context["capabilities"] == {"drop": ["ALL"]}


# ---- values.schema.json -------------------------------------------------------------------


def _rejected(chart: str, set_values: dict[str, Any]) -> str:
    with pytest.raises(HelmError) as raised:
        template(chart, set_values=set_values)
    return str(raised.value)


def test_schema_rejects_a_string_where_a_port_belongs() -> None:
    message = _rejected("relay", {"relay.port": "grpc"})
    assert "values don't meet the specifications of the schema" in message
    assert "at '/relay/port': got string, want integer" in message


def test_schema_rejects_an_unknown_key_naming_it() -> None:
    message = _rejected("bunny", {"dnsConfig.ndot": 2})
    assert "at '/dnsConfig': additional properties 'ndot' not allowed" in message


@pytest.mark.parametrize(
    ("chart", "set_values", "expected"),
    [
        ("relay", {"relay.logLevel": "VERBOSE"}, "at '/relay/logLevel': value must be one of"),
        ("relay", {"relay.store": "postgres://db"}, "at '/relay/store'"),
        (
            "relay",
            {"networkPolicy.tunnelCidrs": ["10.224.0.0"]},
            "at '/networkPolicy/tunnelCidrs/0'",
        ),
        ("relay", {"clusterDns.eksAddon.vpcResolver": "10.100.0.2"}, "at '/clusterDns/eksAddon"),
        (
            "relay",
            {"service.awsLoadBalancer.subnets": [{"id": "subnet-a", "cidr": "10.100.1.0"}]},
            "at '/service/awsLoadBalancer/subnets/0/cidr'",
        ),
        (
            "relay",
            {"networkPolicy.loadBalancerCidrs": ["10.100.1.0/24"]},
            "additional properties 'loadBalancerCidrs' not allowed",
        ),
        ("bunny", {"bunny.target": "relay.private.aws.internal"}, "at '/bunny/target'"),
        ("bunny", {"networkPolicy.collectorPorts": ["otlp"]}, "got string, want integer"),
        ("bunny", {"dnsConfig.options": [{"name": "ndots"}]}, "at '/dnsConfig/options/0/name'"),
        ("bunny", {"diagnose.hops": [{"label": "x", "addr": "10.2.4.4"}]}, "at '/diagnose/hops/0'"),
        (
            "bunny",
            {"networkPolicy.localDns.addresses": ["169.254.10.10/32"]},
            "at '/networkPolicy/localDns/addresses/0'",
        ),
    ],
)
def test_schema_rejects_wrong_values_with_their_path(
    chart: str, set_values: dict[str, Any], expected: str
) -> None:
    assert expected in _rejected(chart, set_values)


def _schema_nodes(
    node: dict[str, Any], path: str = "", required: bool = True
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """Every node of a values schema: its dotted path, itself, and whether it is required."""
    yield path, node, required
    wanted = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        yield from _schema_nodes(
            child, f"{path}.{key}" if path else key, required and key in wanted
        )


def _values_keys(text: str) -> dict[str, bool]:
    """Each key values.yaml defines, and whether a comment stands directly above it."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    commented = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            commented = True
            continue
        indent = len(line) - len(line.lstrip())
        key, sep, _ = stripped.partition(":")
        if not stripped or stripped.startswith("-") or not sep or " " in key:
            commented = False
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = f"{stack[-1][1]}.{key}" if stack else key
        found[path] = commented
        stack.append((indent, path))
        commented = False
    return found


@pytest.mark.parametrize("chart", ["relay", "bunny"])
def test_schema_covers_and_values_yaml_documents_every_value(chart: str) -> None:
    """Groups of values (schema objects with required keys) need no comment; every value
    in them does, and is in the schema with a description. A value that is a Kubernetes
    object (resources, a security context) is documented as a whole."""
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    nodes = {path: node for path, node, _ in _schema_nodes(schema)}
    required = {path for path, _, needed in _schema_nodes(schema) if needed and path}
    defined = _values_keys((CHARTS / chart / "values.yaml").read_text())

    def in_group(path: str) -> bool:
        parent = path.rpartition(".")[0]
        return not parent or (in_group(parent) and "required" in nodes.get(parent, {}))

    values = {path: commented for path, commented in defined.items() if in_group(path)}
    assert [path for path in values if path not in nodes] == [], "not in values.schema.json"
    assert sorted(required - values.keys()) == [], "required by the schema, missing in values.yaml"
    leaves = [path for path in values if "required" not in nodes[path]]
    assert [path for path in leaves if not values[path]] == [], "no comment in values.yaml"
    assert [path for path in leaves if "description" not in nodes[path]] == []
    assert all(
        node.get("additionalProperties") is False for node in nodes.values() if "required" in node
    )


def test_the_two_profiles_describe_one_layout() -> None:
    """bunny's policy lets jobs out to the subnets relay's NLB is placed in, and relay's
    policy admits the VNet bunny's diagnosis runs from."""
    relay = yaml.safe_load((CHARTS / "relay" / "values-eks.yaml").read_text())
    bunny = yaml.safe_load((CHARTS / "bunny" / "values-aks.yaml").read_text())
    nlb_subnets = [s["cidr"] for s in relay["service"]["awsLoadBalancer"]["subnets"]]
    assert bunny["networkPolicy"]["relayCidrs"] == nlb_subnets
    forwarder = ipaddress.ip_address(bunny["clusterDns"]["corednsCustom"]["forwarder"])
    (vnet,) = relay["networkPolicy"]["tunnelCidrs"]
    assert forwarder in ipaddress.ip_network(vnet)


@pytest.mark.parametrize("profile", ["relay-eks", "bunny-aks"])
def test_profiles_are_commented(profile: str) -> None:
    chart, (values_file,), _ = PROFILES[profile]
    text = (CHARTS / chart / values_file).read_text()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 15
    assert "helm upgrade --install" in text
