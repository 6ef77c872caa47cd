"""The images ``make images`` builds, run the way the chart and compose.yaml run them.

relay runs hardened exactly as both deployments ask (UID 10001, read-only root, every
capability dropped, no-new-privileges, a tmpfs on /tmp, a volume on its state directory);
its gRPC health is read from this host through a published port, a job goes to it from a
bunny container on a network of the test's own, and the image's HEALTHCHECK is run by the
engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e import engine
from tests.e2e.engine import container, inspect, network, require_image, run, unique, volume

pytestmark = pytest.mark.timeout(300)

RELAY_IMAGE = "bunny-relay/relay:dev"
BUNNY_IMAGE = "bunny-relay/bunny:dev"
UID = "10001"
# What compose.yaml's x-hardened and x-app anchors and the charts' security contexts set.
HARDENED = [
    "--user", f"{UID}:{UID}",
    "--read-only",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
    "--tmpfs", "/tmp",
]  # fmt: skip
# The Dockerfile's base images are Debian with Python: the application is what relay adds.
RELAY_BUDGET_MB = 70


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[str, int]]:
    """A hardened relay on a network of this run's own: (its container name, the host port
    its gRPC port is published on)."""
    require_image(RELAY_IMAGE, "images")
    name = unique("bunny-relay-e2e-relay")
    with (
        network(unique("bunny-relay-e2e")) as net,
        volume(unique("bunny-relay-e2e-state")) as state,
        container(
            name,
            [
                *HARDENED,
                "--volume", f"{state}:/var/lib/relay",
                "--network", net,
                "--network-alias", "relay",
                "--publish", "127.0.0.1::50051",
                "--env", "RELAY_LISTEN=0.0.0.0:50051",
                RELAY_IMAGE,
            ],
        ) as relay_container,
    ):  # fmt: skip
        port = inspect("container", relay_container)["NetworkSettings"]["Ports"]["50051/tcp"][0]
        yield relay_container, int(port["HostPort"])


def health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True
        )
        return int(reply.status)


def test_relay_runs_hardened_and_answers_serving(relay: tuple[str, int]) -> None:
    name, port = relay
    assert health(port) == health_pb2.HealthCheckResponse.SERVING
    config = inspect("container", name)
    assert config["Config"]["User"] == f"{UID}:{UID}"
    assert config["HostConfig"]["ReadonlyRootfs"] is True
    # Its own state directory is the one place it can write.
    touch = run(["exec", name, "touch", "/var/lib/relay/probe", "/opt/probe"], check=False)
    assert "'/opt/probe': Read-only file system" in touch.stderr
    assert "/var/lib/relay/probe" not in touch.stderr
    assert run(["exec", name, "id", "-u"]).stdout.strip() == UID
    status = run(["exec", name, "grep", "^CapEff", "/proc/self/status"]).stdout
    assert status.split()[-1] == "0000000000000000"
    # No installer is left to fetch code at run time.
    for installer in ("pip", "setuptools"):
        assert run(["exec", name, "python", "-c", f"import {installer}"], check=False).returncode


def test_a_job_from_the_bunny_image_succeeds(relay: tuple[str, int]) -> None:
    require_image(BUNNY_IMAGE, "images")
    name, _ = relay
    net = next(iter(inspect("container", name)["NetworkSettings"]["Networks"]))
    result = run(
        [
            "run", "--rm", *HARDENED, "--network", net, BUNNY_IMAGE,
            "submit", "--target", "relay:50051", "--kind", "sha256", "--payload", "hello",
            "--json",
        ],
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert job["status"] == "SUCCEEDED", job
    # sha256("hello"), computed by relay, which the job reached by its name on the network.
    assert job["output"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert job["dns_source"] == "wire"


def test_the_healthcheck_passes_on_a_serving_relay_and_fails_without_one(
    relay: tuple[str, int],
) -> None:
    name, port = relay
    health(port)
    image = inspect("image", RELAY_IMAGE)
    # Docker keeps it in the image's config, podman beside it.
    check = (image.get("Healthcheck") or image["Config"]["Healthcheck"])["Test"]
    assert check[-3:] == ["-m", "bunnyrelay.healthcheck", "127.0.0.1:50051"], check
    if engine.engine() == "podman":
        # podman schedules checks with systemd timers; with no systemd, run one now.
        passed = run(["healthcheck", "run", name], check=False)
        assert passed.returncode == 0, passed.stdout + passed.stderr

    def status() -> str:
        state = inspect("container", name)["State"]
        return str((state.get("Health") or state.get("Healthcheck") or {}).get("Status"))

    deadline = time.monotonic() + 60
    while status() != "healthy":
        assert time.monotonic() < deadline, f"the container's health: {status()}"
        time.sleep(1)
    # The same command against a port nobody serves fails: the check can tell.
    refused = run(["exec", name, *check[1:-1], "127.0.0.1:1"], check=False)
    assert refused.returncode != 0


def test_relay_adds_at_most_its_budget_to_its_base() -> None:
    image = require_image(RELAY_IMAGE, "images")
    base = image["Config"]["Labels"]["org.opencontainers.image.base.name"]
    added_mb = (image["Size"] - inspect("image", base)["Size"]) / 1e6
    print(f"{RELAY_IMAGE}: {image['Size'] / 1e6:.0f} MB, {added_mb:.0f} MB over {base}")
    assert added_mb <= RELAY_BUDGET_MB


# Lists what the image's Python can import from its own environment: top-level names only.
_LIST_PACKAGES = """
import pathlib, sysconfig
site = pathlib.Path(sysconfig.get_path("purelib"))
for entry in sorted(site.iterdir()):
    print(entry.name)
shared = site / "bunnyrelay"
for entry in sorted(shared.iterdir()):
    print("bunnyrelay/" + entry.name)
"""


@pytest.mark.parametrize("image", [RELAY_IMAGE, BUNNY_IMAGE])
def test_the_images_hold_the_services_and_never_the_lab(image: str) -> None:
    require_image(image, "images")
    listed = run(
        ["run", "--rm", *HARDENED, "--entrypoint", "python", image, "-c", _LIST_PACKAGES]
    ).stdout.split()
    for shipped in ("bunny", "relay", "bunnyrelay", "bunnyrelay/v1", "bunnyrelay/otlpencode"):
        assert shipped in listed, f"{shipped} is missing from {image}: {listed}"
    for development in ("lab", "tests", "grpc_tools", "bunnyrelay/lab", "bunnyrelay/protogen.py"):
        assert development not in listed, f"{development} entered {image}"
