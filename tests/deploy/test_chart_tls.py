"""TLS in both charts (``tls.*``), read from what ``helm template`` renders.

relay serves TLS from a Secret that cert-manager writes (or that exists already) and
moves the kubelet's probes to a plaintext health-only port; bunny presents a client
certificate the same way. Both mount their Secret as a whole directory: a ``subPath``
mount is never updated, so a renewed certificate would never reach the process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from bunny.cli import build_parser as bunny_parser
from tests.deploy.tools import (
    CHARTS,
    KUBERNETES_VERSIONS,
    HelmError,
    Rendered,
    env_of,
    helm,
    kubeconform,
    pod_security,
    pod_spec,
    template,
)

ISSUER = {"name": "private-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
TLS_PROFILES: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "relay-tls": ("relay", (), {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER}),
    "relay-eks-tls": (
        "relay",
        ("values-eks.yaml",),
        {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER},
    ),
    # An existing Secret, and the clients' CA from a Secret of its own.
    "relay-tls-secret": (
        "relay",
        (),
        {
            "tls.enabled": True,
            "tls.certManager.enabled": False,
            "tls.secretName": "relay-cert",
            "tls.clientCA": {"secretName": "clients-ca", "key": "bundle.pem"},
        },
    ),
    "bunny-tls": ("bunny", (), {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER}),
    "bunny-aks-tls": (
        "bunny",
        ("values-aks.yaml",),
        {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER},
    ),
    "bunny-tls-secret": (
        "bunny",
        (),
        {
            "tls.enabled": True,
            "tls.certManager.enabled": False,
            "tls.secretName": "bunny-cert",
            "tls.relayCA": {"secretName": "relay-ca", "key": "ca.pem"},
        },
    ),
}


def render(profile: str, kube_version: str = KUBERNETES_VERSIONS[-1]) -> Rendered:
    chart, values_files, set_values = TLS_PROFILES[profile]
    return template(chart, values_files, set_values, kube_version=kube_version)


def relay_parts(set_values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """relay's container and its pod spec."""
    spec = pod_spec(template("relay", set_values=set_values).one("Deployment"))
    (container,) = spec["containers"]
    return container, spec


def _mounts_and_volumes(spec: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (mount, volume) pair of a pod whose volume is a Secret."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return [
        (mount, volumes[mount["name"]])
        for container in spec["containers"]
        for mount in container.get("volumeMounts", [])
        if "secret" in volumes[mount["name"]]
    ]


# ---- the real tools, with TLS on ----------------------------------------------------------


@pytest.mark.parametrize("profile", TLS_PROFILES)
def test_helm_lint_strict_passes_with_tls(profile: str) -> None:
    chart, values_files, set_values = TLS_PROFILES[profile]
    args = ["lint", "--strict", str(CHARTS / chart), "--kube-version", KUBERNETES_VERSIONS[-1]]
    for values_file in values_files:
        args += ["--values", str(CHARTS / chart / values_file)]
    for key, value in set_values.items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    output = helm(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in output
    assert "[WARNING]" not in output, output


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("profile", TLS_PROFILES)
def test_with_tls_every_object_but_the_certificate_is_valid_kubernetes(
    profile: str, kube_version: str
) -> None:
    """kubeconform validates offline against the Kubernetes schemas only, and has none for
    cert-manager's CRDs: every other object is validated strictly here, and the
    Certificates are checked by their content in the tests below instead."""
    rendered = render(profile, kube_version)
    others = [o for o in rendered.objects if o["kind"] != "Certificate"]
    assert len(others) < len(rendered.objects) or profile.endswith("-secret")
    result = kubeconform(yaml.safe_dump_all(others), kube_version)
    report = json.loads(result.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert problems == [], json.dumps(problems, indent=1)
    assert result.returncode == 0, result.stderr
    assert report["summary"]["valid"] == len(others)
    assert report["summary"]["skipped"] == 0


@pytest.mark.parametrize("profile", TLS_PROFILES)
def test_with_tls_every_pod_still_passes_the_restricted_pod_security_standard(
    profile: str,
) -> None:
    verdicts = pod_security(render(profile).text)
    assert {v["object"].split("/")[0] for v in verdicts} == {"Deployment", "Pod"}
    assert [v for v in verdicts if not v["allowed"]] == []


# ---- off by default -------------------------------------------------------------------------


@pytest.mark.parametrize("chart", ["relay", "bunny"])
def test_tls_off_renders_no_certificate_no_tls_env_and_no_secret_volume(chart: str) -> None:
    rendered = template(chart)
    assert "Certificate" not in rendered.kinds()
    for obj in rendered.objects:
        if obj["kind"] not in ("Deployment", "Pod"):
            continue
        spec = pod_spec(obj)
        assert _mounts_and_volumes(spec) == []
        for container in spec["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            assert not {n for n in names if n.startswith(("RELAY_TLS", "BUNNY_TLS"))}
            assert "RELAY_HEALTH_LISTEN" not in names


# ---- relay ----------------------------------------------------------------------------------


def test_relays_certificate_is_cert_managers_with_the_route53_and_service_names() -> None:
    rendered = render("relay-tls")
    certificate = rendered.one("Certificate", "rel-relay")
    spec = certificate["spec"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert spec["secretName"] == "rel-relay-tls"
    assert spec["dnsNames"] == [
        "relay.private.aws.internal",
        "rel-relay.ns.svc",
        "rel-relay.ns.svc.cluster.local",
    ]
    assert spec["issuerRef"] == ISSUER
    assert spec["privateKey"] == {"rotationPolicy": "Always"}
    assert "server auth" in spec["usages"]
    assert "client auth" not in spec["usages"]
    assert (spec["duration"], spec["renewBefore"]) == ("2160h", "360h")
    # The Deployment mounts what cert-manager writes.
    (_, volume), *_ = _mounts_and_volumes(pod_spec(rendered.one("Deployment")))
    assert volume["secret"]["secretName"] == spec["secretName"]


def test_the_helm_test_client_certificate_exists_only_for_mutual_tls() -> None:
    client = render("relay-tls").one("Certificate", "-test-client")["spec"]
    assert client["secretName"] == "rel-relay-test-client-tls"
    assert client["usages"] == ["client auth", "digital signature", "key encipherment"]
    assert client["issuerRef"] == ISSUER
    assert client["privateKey"] == {"rotationPolicy": "Always"}
    one_way = template(
        "relay",
        set_values={
            "tls.enabled": True,
            "tls.requireClientCert": False,
            "tls.certManager.issuerRef": ISSUER,
        },
    )
    assert [o["metadata"]["name"] for o in one_way.objects if o["kind"] == "Certificate"] == [
        "rel-relay"
    ]


@pytest.mark.parametrize(
    "profile", ["relay-tls", "relay-tls-secret", "bunny-tls", "bunny-tls-secret"]
)
def test_tls_secrets_are_mounted_read_only_as_directories_never_with_subpath(
    profile: str,
) -> None:
    """The kubelet updates a Secret volume's files when the Secret changes, except where a
    file is mounted with subPath: then rotation silently stops at the first certificate."""
    rendered = render(profile)
    pods = [pod_spec(o) for o in rendered.objects if o["kind"] in ("Deployment", "Pod")]
    pairs = [pair for spec in pods for pair in _mounts_and_volumes(spec)]
    assert len(pairs) >= 2  # the app and its helm test
    for mount, volume in pairs:
        assert "subPath" not in mount
        assert "subPathExpr" not in mount
        assert mount["readOnly"] is True
        assert mount["mountPath"].startswith(("/etc/relay/", "/etc/bunny/"))
        assert volume["secret"]["defaultMode"] == 0o440


def test_relay_reads_its_certificate_key_and_client_ca_from_the_mounted_directory() -> None:
    container, _ = relay_parts({"tls.enabled": True, "tls.certManager.issuerRef": ISSUER})
    env = env_of(container)
    assert env["RELAY_TLS_CERT"] == "/etc/relay/tls/tls.crt"
    assert env["RELAY_TLS_KEY"] == "/etc/relay/tls/tls.key"
    assert env["RELAY_TLS_CLIENT_CA"] == "/etc/relay/tls/ca.crt"
    assert {"name": "tls", "mountPath": "/etc/relay/tls", "readOnly": True} in container[
        "volumeMounts"
    ]


def test_an_existing_secret_and_a_separate_client_ca_are_mounted_where_relay_reads_them() -> None:
    rendered = render("relay-tls-secret")
    spec = pod_spec(rendered.one("Deployment"))
    (container,) = spec["containers"]
    env = env_of(container)
    mounted = {m["mountPath"]: v["secret"]["secretName"] for m, v in _mounts_and_volumes(spec)}
    assert mounted == {"/etc/relay/tls": "relay-cert", "/etc/relay/client-ca": "clients-ca"}
    assert env["RELAY_TLS_CERT"] == "/etc/relay/tls/tls.crt"
    assert env["RELAY_TLS_CLIENT_CA"] == "/etc/relay/client-ca/bundle.pem"
    assert "Certificate" not in rendered.kinds()


def test_without_mutual_tls_relay_is_given_no_client_ca() -> None:
    container, _ = relay_parts(
        {"tls.enabled": True, "tls.requireClientCert": False, "tls.certManager.issuerRef": ISSUER}
    )
    env = env_of(container)
    assert "RELAY_TLS_CERT" in env
    assert "RELAY_TLS_CLIENT_CA" not in env


def test_with_tls_the_probes_ask_the_plaintext_health_port() -> None:
    """The kubelet's native gRPC probes cannot speak TLS: they ask relay's health-only
    plaintext port, which reports the TLS port's health (tests/relay/test_health_listen.py)."""
    container, _ = relay_parts(
        {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER, "relay.healthPort": 9000}
    )
    assert container["ports"] == [
        {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
        {"name": "grpc-health", "containerPort": 9000, "protocol": "TCP"},
    ]
    env = env_of(container)
    assert env["RELAY_LISTEN"] == "0.0.0.0:50051"
    assert env["RELAY_HEALTH_LISTEN"] == "0.0.0.0:9000"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 9000}, probe


def test_the_health_port_stays_off_the_service_and_out_of_the_network_policy() -> None:
    """Only the kubelet asks it, from the pod's own node, which NetworkPolicy always admits."""
    rendered = render("relay-eks-tls")
    service = rendered.one("Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["grpc"]
    assert "appProtocol" not in service["spec"]["ports"][0]  # TLS, not h2c
    (rule,) = rendered.one("NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"port": 50051, "protocol": "TCP"}]


def test_relays_helm_test_runs_the_echo_job_over_mutual_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = render("relay-tls")
    pod = rendered.one("Pod", "-test-grpc")
    (job,) = pod["spec"]["containers"]  # the plaintext health check is the kubelet's now
    env = env_of(job)
    assert env == {
        "BUNNY_TLS_CA": "/etc/relay/tls/ca.crt",
        "BUNNY_TLS_CERT": "/etc/relay/test-client/tls.crt",
        "BUNNY_TLS_KEY": "/etc/relay/test-client/tls.key",
    }
    volumes = {v["name"]: v["secret"] for v in pod["spec"]["volumes"]}
    assert volumes["tls"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # not relay's key
    assert volumes["client"]["secretName"] == "rel-relay-test-client-tls"
    # bunny takes those variables, and checks a name relay's certificate carries.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    program, *argv = job["command"]
    args = bunny_parser().parse_args(argv)
    assert program == "bunny"
    assert str(args.tls_cert) == "/etc/relay/test-client/tls.crt"
    target_name = str(args.target.host).rstrip(".")
    assert target_name in rendered.one("Certificate", "rel-relay")["spec"]["dnsNames"]


# ---- bunny ----------------------------------------------------------------------------------


def test_bunnys_certificate_is_a_client_certificate_from_cert_manager() -> None:
    rendered = render("bunny-tls")
    certificate = rendered.one("Certificate")
    spec = certificate["spec"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert spec["secretName"] == "rel-bunny-tls"
    assert spec["usages"] == ["client auth", "digital signature", "key encipherment"]
    assert spec["commonName"] == "rel-bunny"
    assert spec["issuerRef"] == ISSUER
    assert spec["privateKey"] == {"rotationPolicy": "Always"}


@pytest.mark.parametrize(
    ("profile", "ca"),
    [("bunny-tls", "/etc/bunny/tls/ca.crt"), ("bunny-tls-secret", "/etc/bunny/relay-ca/ca.pem")],
)
def test_bunny_and_its_diagnose_test_talk_tls_with_the_mounted_files(
    profile: str, ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(profile)
    wanted = {
        "BUNNY_TLS": "true",
        "BUNNY_TLS_CA": ca,
        "BUNNY_TLS_CERT": "/etc/bunny/tls/tls.crt",
        "BUNNY_TLS_KEY": "/etc/bunny/tls/tls.key",
    }
    (bunny,) = pod_spec(rendered.one("Deployment"))["containers"]
    (diagnose,) = rendered.one("Pod", "-test-diagnose")["spec"]["containers"]
    for container in (bunny, diagnose):
        env = env_of(container)
        assert {k: env[k] for k in wanted} == wanted
    # `bunny diagnose` takes them from its environment, as `bunny submit` does.
    for name, value in wanted.items():
        monkeypatch.setenv(name, value)
    args = bunny_parser().parse_args(diagnose["command"][1:])
    assert args.tls is True
    assert (str(args.tls_ca), str(args.tls_cert)) == (ca, "/etc/bunny/tls/tls.crt")


# ---- wrong values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "set_values", "expected"),
    [
        ("relay", {"tls.enabled": True}, "tls.certManager.issuerRef.name is required"),
        ("bunny", {"tls.enabled": True}, "tls.certManager.issuerRef.name is required"),
        (
            "relay",
            {"tls.enabled": True, "tls.certManager.enabled": False},
            "tls.enabled needs a certificate",
        ),
        (
            "relay",
            {"tls.enabled": True, "tls.secretName": "x", "tls.certManager.issuerRef": ISSUER},
            "tls.secretName and tls.certManager.enabled exclude each other",
        ),
        (
            "relay",
            {"tls.enabled": True, "tls.certManager.issuerRef": ISSUER, "relay.healthPort": 50051},
            "relay.healthPort must differ from relay.port",
        ),
        ("relay", {"tls.certManager.privateKey.rotationPolicy": "Sometimes"}, "/tls/certManager"),
        ("relay", {"tls.certManager.dnsNames": []}, "at '/tls/certManager/dnsNames'"),
        ("relay", {"tls.certManager.duration": "90 days"}, "at '/tls/certManager/duration'"),
        ("relay", {"relay.healthPort": "health"}, "at '/relay/healthPort': got string"),
        ("relay", {"tls.clientCa": {}}, "additional properties 'clientCa' not allowed"),
        ("bunny", {"tls.certManager.issuerRef.namespace": "x"}, "additional properties"),
    ],
)
def test_wrong_tls_values_are_refused_with_a_clear_message(
    chart: str, set_values: dict[str, Any], expected: str
) -> None:
    with pytest.raises(HelmError) as raised:
        template(chart, set_values=set_values)
    assert expected in str(raised.value)
