"""compose.yaml: valid Compose, and the cross-cloud path wired the way the lab runs it.

No container engine runs here, so the file is validated against the Compose
Specification's JSON schema (check-jsonschema's vendored copy, offline), and the wiring
is read from the file itself: every address one hop gives for the next is that hop's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import corefiles, deployfiles
from lab.corefiles import Role
from tests.deploy.tools import ROOT, load, run, tool

COMPOSE = ROOT / "compose.yaml"
CLOUDS = {"azure", "aws"}
COREDNS_ROLES = {
    "cluster-dns": Role.CLUSTER_DNS,
    "forwarder": Role.FORWARDER,
    "aws-resolver": Role.AWS_RESOLVER,
    "zone": Role.ZONE_SERVER,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def address(compose: dict[str, Any], service: str, network: str) -> str:
    return str(compose["services"][service]["networks"][network]["ipv4_address"])


def networks(service: dict[str, Any]) -> set[str]:
    joined = service["networks"]
    return set(joined) if isinstance(joined, dict | list) else set()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts of repository files: {target in the container: ./source}."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            found[target] = source
    return found


def mounted(compose: dict[str, Any], service: str, target: str) -> str:
    """The text of the repository file mounted at ``target`` in ``service``."""
    return (ROOT / mounts(services(compose)[service])[target]).read_text(encoding="utf-8")


def proxies(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = json.loads(mounted(compose, "tunnel", "/etc/toxiproxy/proxies.json"))
    return {proxy["name"]: proxy for proxy in listed}


def check_compose(path: Path) -> Any:
    return run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path])


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    result = check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_compose_schema_rejects_a_wrong_value_naming_it(tmp_path: Path) -> None:
    for good, bad, message in [
        (
            "stop_grace_period: 30s",
            "stop_grace_periods: 30s",
            "('stop_grace_periods' was unexpected)",
        ),
        ("retries: 3", "retries: [3]", "services.relay.healthcheck.retries: [3] is not of type"),
    ]:
        assert good in COMPOSE.read_text()
        (tmp_path / "compose.yaml").write_text(COMPOSE.read_text().replace(good, bad))
        result = check_compose(tmp_path / "compose.yaml")
        assert result.returncode == 1
        assert message in result.stdout


def test_two_networks_play_the_clouds_and_only_the_tunnel_joins_them(
    compose: dict[str, Any],
) -> None:
    assert set(compose["networks"]) == CLOUDS
    on = {name: networks(service) for name, service in services(compose).items()}
    assert [name for name, joined in on.items() if joined == CLOUDS] == ["tunnel"]
    azure = {name for name, joined in on.items() if joined == {"azure"}}
    aws = {name for name, joined in on.items() if joined == {"aws"}}
    assert azure == {
        "cluster-dns", "forwarder", "bunny", "otel-collector", "jaeger", "prometheus", "grafana"
    }  # fmt: skip
    assert aws == {"aws-resolver", "zone", "relay"}


def test_the_dns_chain_is_wired_hop_to_hop(compose: dict[str, Any]) -> None:
    env = {name: service.get("environment", {}) for name, service in services(compose).items()}
    tunnel = proxies(compose)
    dns_port = tunnel["dns"]["listen"].rpartition(":")[2]
    resolv_conf = mounted(compose, "bunny", "/etc/bunny/resolv.conf")

    assert f"nameserver {address(compose, 'cluster-dns', 'azure')}\n" in resolv_conf
    assert "options ndots:5" in resolv_conf  # a pod's resolv.conf on AKS
    assert env["cluster-dns"]["FORWARDER"] == address(compose, "forwarder", "azure") + ":53"
    assert env["forwarder"]["AWS_RESOLVER"] == f"{address(compose, 'tunnel', 'azure')}:{dns_port}"
    assert tunnel["dns"]["upstream"] == address(compose, "aws-resolver", "aws") + ":53"
    assert env["aws-resolver"]["ZONE_SERVER"] == address(compose, "zone", "aws") + ":53"


def test_relay_is_reached_across_the_tunnel_at_the_address_its_record_gives(
    compose: dict[str, Any],
) -> None:
    env = services(compose)["relay"]["environment"]
    port = env["RELAY_LISTEN"].rpartition(":")[2]
    tunnel = proxies(compose)
    zone = (ROOT / "deploy" / "compose" / corefiles.ZONE_FILE_NAME).read_text()
    record = re.search(r"^relay\s+IN A\s+(\S+)$", zone, flags=re.MULTILINE)
    assert record, zone
    assert record.group(1) == address(compose, "tunnel", "azure")
    assert tunnel["relay"]["listen"] == f"0.0.0.0:{port}"
    assert tunnel["relay"]["upstream"] == f"{address(compose, 'relay', 'aws')}:{port}"
    assert (
        services(compose)["bunny"]["environment"]["BUNNY_TARGET"]
        == f"relay.private.aws.internal:{port}"
    )
    # Telemetry from the AWS side crosses the tunnel to the collector on the Azure side.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{address(compose, 'tunnel', 'aws')}:4317"
    assert tunnel["otlp"]["upstream"] == address(compose, "otel-collector", "azure") + ":4317"


@pytest.mark.parametrize("service", COREDNS_ROLES)
def test_coredns_runs_the_deploy_coredns_files_themselves(
    compose: dict[str, Any], service: str
) -> None:
    """Mounted, not copied: CoreDNS fills each {$NAME} from the service's environment."""
    role = COREDNS_ROLES[service]
    spec = services(compose)[service]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in spec["volumes"])
    assert mounts["./deploy/coredns/" + corefiles.SOURCES[role]] == "/etc/coredns/Corefile"
    wanted = set(corefiles.placeholders(role))
    if role is Role.CLUSTER_DNS:  # and the conditional forward it imports
        wanted |= corefiles.placeholders(Role.CONDITIONAL_FORWARD)
    assert {name.lower() for name in spec.get("environment", {})} == wanted
    assert spec["command"] == ["-conf", "/etc/coredns/Corefile"]
    assert spec["working_dir"] == "/etc/coredns"
    if role is Role.CLUSTER_DNS:
        key = corefiles.CONDITIONAL_FORWARD_KEY
        assert mounts[f"./deploy/coredns/{key}"] == f"/etc/coredns/custom/{key}"
    if role is Role.ZONE_SERVER:
        name = corefiles.ZONE_FILE_NAME
        assert mounts[f"./deploy/compose/{name}"] == f"/etc/coredns/{name}"


def test_relays_health_check_is_a_grpc_health_check_and_bunny_waits_for_it(
    compose: dict[str, Any],
) -> None:
    relay = services(compose)["relay"]
    port = relay["environment"]["RELAY_LISTEN"].rpartition(":")[2]
    assert relay["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "bunnyrelay.healthcheck",
        f"127.0.0.1:{port}",
    ]
    assert services(compose)["bunny"]["depends_on"]["relay"] == {"condition": "service_healthy"}


def test_relay_is_given_longer_to_stop_than_its_drain(compose: dict[str, Any]) -> None:
    relay = services(compose)["relay"]
    stop = int(relay["stop_grace_period"].removesuffix("s"))
    assert stop >= int(relay["environment"]["RELAY_GRACE_PERIOD"]) + 5


def test_every_image_is_pinned_and_ours_are_built_from_the_dockerfile(
    compose: dict[str, Any],
) -> None:
    for name, service in services(compose).items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image}"
        assert tag not in ("", "latest"), f"{name}: {image}"
        if "build" in service:
            assert service["build"] == {"context": ".", "target": name}
        else:
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"


def test_every_container_is_read_only_with_no_capabilities(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service.get("cap_add") is None, name
        assert service["security_opt"] == ["no-new-privileges:true"], name
    for name in ("bunny", "relay"):
        assert services(compose)[name]["user"] == "10001:10001"


def test_files_reach_containers_as_read_only_bind_mounts_not_configs(
    compose: dict[str, Any],
) -> None:
    """Docker Compose refuses an inline ``content:`` config on a read-only service
    ("'file' is the sole supported option"), and podman-compose ignores ``configs:``
    altogether: a file every implementation delivers is a read-only bind mount."""
    assert "configs" not in compose
    for name, service in services(compose).items():
        assert "configs" not in service, name
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert volume.endswith(":ro"), f"{name}: {volume}"
                # ${VARIABLE:-default} as compose reads it when the variable is unset.
                path = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume).split(":")[0]
                assert (ROOT / path).is_file(), f"{name}: {volume}"


def test_the_two_clouds_are_isolated_networks(compose: dict[str, Any]) -> None:
    for name in CLOUDS:
        assert compose["networks"][name]["driver_opts"] == {"isolate": "true"}, name


def test_the_collector_sends_traces_to_jaeger(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    traces = config["service"]["pipelines"]["traces"]
    (exporter,) = traces["exporters"]
    assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert "127.0.0.1:${JAEGER_UI_PORT:-16686}:16686" in services(compose)["jaeger"]["ports"]


def test_bunnys_batches_export_deltas_under_the_containers_one_instance(
    compose: dict[str, Any],
) -> None:
    """One process per batch: only deltas under one service.instance.id add up in the
    Collector (its delta_to_cumulative) to a series that rate() sees move."""
    bunny = services(compose)["bunny"]
    assert bunny["environment"]["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"] == "delta"
    (script,) = bunny["command"]
    named, loop = script.index("service.instance.id=$$(uname -n)"), script.index("while :")
    assert named < loop, script
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "otel-collector.yaml").read_text())
    metrics = config["service"]["pipelines"]["metrics"]
    assert metrics["processors"][0] == "delta_to_cumulative"
    assert metrics["exporters"] == ["prometheus"]


def test_the_zone_file_compose_mounts_is_current() -> None:
    path = ROOT / "deploy" / "compose" / corefiles.ZONE_FILE_NAME
    assert deployfiles.stale({path: deployfiles.expected()[path]}) == [], "run `make deploy-files`"


def test_the_tail_sampling_collector_is_the_same_pipeline_with_tail_sampling_first() -> None:
    plain = yaml.safe_load((ROOT / "deploy" / "compose" / "otel-collector.yaml").read_text())
    tail = yaml.safe_load(
        (ROOT / "deploy" / "compose" / "otel-collector-tail-sampling.yaml").read_text()
    )
    assert tail["receivers"] == plain["receivers"]
    assert tail["exporters"] == plain["exporters"]
    assert tail["service"]["pipelines"]["traces"]["processors"] == ["tail_sampling", "batch"]
    # Prometheus reads the same metrics whichever Collector configuration runs.
    metrics = plain["service"]["pipelines"]["metrics"]
    assert tail["service"]["pipelines"]["metrics"] == metrics
    for processor in metrics["processors"]:
        assert tail["processors"][processor] == plain["processors"][processor]
    policies = {p["type"] for p in tail["processors"]["tail_sampling"]["policies"]}
    assert {"status_code", "latency", "probabilistic"} <= policies
