"""The compose stack for real: ``make up``, jobs through the whole chain, one trace across
both services in Jaeger, the tunnel cut through Toxiproxy's API, ``make down``.

The stack is compose.yaml unchanged, brought up by tools/compose.sh (what ``make up``
runs) under a project name and published ports of this run's own, and taken down by it
even when a test fails. The tests run in file order: the cut comes after the healthy
checks, and the last test is ``make down`` itself.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import yaml

from tests.e2e.engine import ROOT, engine, environment, require_image, run, unique

pytestmark = pytest.mark.timeout(600)

T = TypeVar("T")
RELAY_NAME = "relay.private.aws.internal"
# compose.yaml's addresses: relay on the AWS network, the tunnel's Azure side, the collector.
RELAY_AWS_ADDRESS = ("10.100.0.20", 50051)
TUNNEL_RELAY_ADDRESS = ("10.224.0.5", 50051)
COLLECTOR_ADDRESS = ("10.224.0.30", 4317)
# Every image `make up` starts besides ours (a profile's service, Grafana, starts only when asked).
SERVICE_IMAGES = [
    service["image"]
    for service in yaml.safe_load((ROOT / "compose.yaml").read_text())["services"].values()
    if "bunny-relay/" not in service["image"] and not service.get("profiles")
]
DIAGNOSE_HOPS = ["--hop", "cluster-dns=10.224.0.10", "--hop", "forwarder=10.224.0.4"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    project: str
    toxiproxy_port: int
    jaeger_port: int
    prometheus_port: int

    def env(self) -> dict[str, str]:
        return environment(
            COMPOSE_PROJECT_NAME=self.project,
            TOXIPROXY_API_PORT=str(self.toxiproxy_port),
            JAEGER_UI_PORT=str(self.jaeger_port),
            PROMETHEUS_PORT=str(self.prometheus_port),
        )

    def compose(self, command: str) -> subprocess.CompletedProcess[str]:
        """``tools/compose.sh up|down`` (``make up``/``make down``) for this stack."""
        return subprocess.run(
            ["bash", "tools/compose.sh", command],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def container(self, service: str) -> str:
        names = run(
            [
                "ps", "--format", "{{.Names}}",
                "--filter", f"label=com.docker.compose.project={self.project}",
                "--filter", f"label=com.docker.compose.service={service}",
            ]
        ).stdout.split()  # fmt: skip
        assert len(names) == 1, f"{service}: {names}"
        return names[0]

    def exec(
        self, service: str, *argv: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run(["exec", self.container(service), *argv], check=False, timeout=timeout)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {
            "containers": run(["ps", "--all", "--quiet", "--filter", label]).stdout.split(),
            "networks": run(["network", "ls", "--quiet", "--filter", label]).stdout.split(),
            "volumes": run(["volume", "ls", "--quiet", "--filter", label]).stdout.split(),
        }
        return {kind: ids for kind, ids in found.items() if ids}

    def http(self, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method="POST" if body is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120) -> T:
    """Poll ``probe`` until it returns something (each poll is a real request or command)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    for image in ("bunny-relay/relay:dev", "bunny-relay/bunny:dev"):
        require_image(image, "images")
    for image in SERVICE_IMAGES:
        require_image(image, "service-images")
    stack = Stack(unique("bunny-relay-e2e"), free_port(), free_port(), free_port())
    try:
        started = stack.compose("up")
        assert started.returncode == 0, started.stdout + started.stderr
        yield stack
    finally:
        stack.compose("down")


def submit(stack: Stack, count: int, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    """``bunny submit`` inside the bunny container (its resolv.conf, target and OTLP
    endpoint); the exit code and one JSON object per job."""
    result = stack.exec(
        "bunny", "bunny", "submit", "--kind", "sha256", "--payload", "e2e",
        "--count", str(count), "--json", *extra,
    )  # fmt: skip
    jobs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, jobs


def traces(stack: Stack, service: str, **query: str) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode(query)
    found = stack.http(
        stack.jaeger_port, f"/api/traces?service={service}&lookback=1h&limit=200&{params}"
    )
    return list(found["data"] or [])


def services_of(trace: dict[str, Any]) -> dict[str, str]:
    """spanID -> the service that made the span."""
    processes = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    return {span["spanID"]: processes[span["processID"]] for span in trace["spans"]}


def test_bunny_jobs_succeed_through_the_whole_chain(stack: Stack) -> None:
    code, jobs = submit(stack, 8)
    assert code == 0, jobs
    assert len(jobs) == 8
    assert all(job["status"] == "SUCCEEDED" for job in jobs), jobs


def test_the_clouds_meet_only_through_the_tunnel(stack: Stack) -> None:
    def reach(service: str, address: tuple[str, int]) -> bool:
        probe = f"import socket; socket.create_connection({address!r}, timeout=3).close()"
        return bool(stack.exec(service, "python", "-c", probe).returncode == 0)

    assert reach("bunny", TUNNEL_RELAY_ADDRESS)
    assert not reach("bunny", RELAY_AWS_ADDRESS)
    assert not reach("relay", COLLECTOR_ADDRESS)


def test_one_job_is_one_trace_with_both_services_spans_in_jaeger(stack: Stack) -> None:
    submit(stack, 2)

    def joined() -> dict[str, Any] | None:
        for trace in traces(stack, "bunny"):
            made_by = services_of(trace)
            for span in trace["spans"]:
                parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
                parents.append("")  # a root span has none
                # An edge across the services: a relay span whose parent is bunny's.
                if made_by[span["spanID"]] == "relay" and made_by.get(parents[0]) == "bunny":
                    return trace
        return None

    trace = wait_for("a trace holding bunny's and relay's spans of one job", joined)
    assert {span["traceID"] for span in trace["spans"]} == {trace["traceID"]}
    assert set(services_of(trace).values()) == {"bunny", "relay"}


def prometheus_query(stack: Stack, query: str) -> list[dict[str, Any]]:
    found = stack.http(
        stack.prometheus_port, "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    )
    assert found["status"] == "success", found
    return list(found["data"]["result"])


def test_prometheus_scrapes_the_collector_and_evaluates_the_alerts(stack: Stack) -> None:
    """bunny's and relay's metrics, pushed over OTLP (relay's across the tunnel) to the
    Collector, reach Prometheus through the Collector's exporter, with the service name as
    the job label; Prometheus loaded every alert the charts ship, and none is broken."""
    code, _ = submit(stack, 2)
    assert code == 0

    def both_reported() -> list[dict[str, Any]] | None:
        found = prometheus_query(
            stack, 'sum by (job) (bunnyrelay_jobs_total{bunnyrelay_job_status="SUCCEEDED"})'
        )
        return found if {row["metric"].get("job") for row in found} >= {"bunny", "relay"} else None

    wait_for("bunny's and relay's jobs in Prometheus", both_reported)
    ready = wait_for(
        "relay's readiness in Prometheus",
        lambda: prometheus_query(stack, 'bunnyrelay_relay_ready{job="relay"}') or None,
    )
    assert ready[0]["value"][1] == "1"
    looked_up = prometheus_query(
        stack, 'bunnyrelay_dns_lookups_total{job="bunny", bunnyrelay_dns_outcome="answered"}'
    )
    assert {row["metric"]["bunnyrelay_dns_nameserver"] for row in looked_up} == {"10.224.0.10:53"}

    groups = stack.http(stack.prometheus_port, "/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    shipped = {
        rule["alert"]
        for path in sorted((ROOT / "deploy" / "monitoring").glob("*.rules.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    assert set(loaded) == shipped
    assert all(rule["health"] != "err" for rule in loaded.values()), loaded


def test_bunnys_batches_add_up_to_one_series_that_increase_sees(stack: Stack) -> None:
    """The bunny container runs one ``bunny submit`` process per batch (4 jobs each). Their
    deltas, under the container's host name as the instance, are one series in Prometheus
    whose increase() counts the jobs of many batches; per-process series would each hold
    one value, and increase() over them would be 0."""
    host = stack.exec("bunny", "uname", "-n").stdout.strip()
    jobs = f'bunnyrelay_jobs_total{{job="bunny", instance="{host}"}}'

    def batches_added_up() -> float | None:
        found = prometheus_query(stack, f"sum(increase({jobs}[1m]))")
        counted = float(found[0]["value"][1]) if found else 0.0
        return counted if counted > 8 else None  # more than two batches' jobs

    wait_for(f"the jobs of {host}'s batches in one rising series", batches_added_up)
    succeeded = jobs.replace("}", ', bunnyrelay_job_status="SUCCEEDED"}')
    series = prometheus_query(stack, succeeded)
    assert len(series) == 1, series  # one kind: one series for every batch's succeeded jobs


def test_cutting_the_tunnel_fails_jobs_and_their_traces_and_diagnose_name_it(
    stack: Stack,
) -> None:
    proxies = stack.http(stack.toxiproxy_port, "/proxies")
    assert set(proxies) == {"dns", "relay", "otlp"}
    cut_at = time.time()
    for name in proxies:
        stack.http(stack.toxiproxy_port, f"/proxies/{name}", {"enabled": False})

    # The cluster DNS caches relay's answer for its TTL (30 s): jobs fail once it expires.
    def a_dns_failure() -> list[dict[str, Any]] | None:
        code, jobs = submit(stack, 1, "--attempts", "1", "--timeout", "10")
        # (Until then relay's own address is refused by the tunnel: not the failure sought.)
        failed = [job for job in jobs if (job["error"] or {}).get("likely_cause")]
        return failed if code != 0 and failed else None

    failed = wait_for("a job failing on the cut tunnel", a_dns_failure, timeout=120)
    assert "tunnel" in failed[0]["error"]["likely_cause"], failed

    def causes_after_the_cut() -> list[str] | None:
        """What the failed lookups' spans say caused them, in traces begun after the cut."""
        found = [
            tag["value"]
            for trace in traces(stack, "bunny")
            if min(span["startTime"] for span in trace["spans"]) / 1e6 >= cut_at
            for span in trace["spans"]
            for tag in span["tags"]
            if tag["key"] == "bunnyrelay.dns.likely_cause"
        ]
        return found or None

    causes = wait_for("failed jobs' traces in Jaeger", causes_after_the_cut)
    assert all("tunnel" in cause for cause in causes), causes

    diagnosis = stack.exec(
        "bunny", "bunny", "diagnose", f"{RELAY_NAME}:50051", *DIAGNOSE_HOPS, "--json"
    )
    assert diagnosis.returncode != 0, diagnosis.stdout + diagnosis.stderr
    verdict = json.loads(diagnosis.stdout)["verdict"]
    assert verdict["ok"] is False
    assert "tunnel" in verdict["explanation"], verdict

    for name in proxies:
        stack.http(stack.toxiproxy_port, f"/proxies/{name}", {"enabled": True})

    # Mended, jobs succeed again once the resolvers stop serving the failure they cached.
    def mended() -> bool | None:
        code, jobs = submit(stack, 2, "--attempts", "1")
        return True if code == 0 and all(job["status"] == "SUCCEEDED" for job in jobs) else None

    wait_for("jobs succeeding after the tunnel is mended", mended, timeout=90)


def test_make_down_leaves_no_container_network_or_volume(stack: Stack) -> None:
    assert stack.leftovers(), "the stack should be up before it is taken down"
    down = stack.compose("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert stack.leftovers() == {}
    again = stack.compose("down")
    assert again.returncode == 0, again.stdout + again.stderr


def test_up_with_a_published_port_taken_names_it_and_starts_nothing() -> None:
    stack = Stack(unique("bunny-relay-e2e"), free_port(), free_port(), free_port())
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", stack.jaeger_port))
        squatter.listen()
        result = stack.compose("up")
    assert result.returncode == 1
    assert f"port 127.0.0.1:{stack.jaeger_port}" in result.stderr, result.stderr
    assert "jaeger" in result.stderr
    assert "Traceback" not in result.stderr
    assert stack.leftovers() == {}


def test_a_stack_that_fails_to_start_is_taken_down_whole() -> None:
    """A service that cannot be created (its container name is taken) fails ``make up``,
    and what had started is removed: nothing is left running."""
    stack = Stack(unique("bunny-relay-e2e"), free_port(), free_port(), free_port())
    # The name the compose implementation gives the zone's container.
    squatter = f"{stack.project}_zone_1" if engine() == "podman" else f"{stack.project}-zone-1"
    run(["create", "--name", squatter, "docker.io/coredns/coredns:1.14.7"])
    try:
        result = stack.compose("up")
    finally:
        run(["rm", "--force", squatter])
    assert result.returncode == 1
    assert "did not start: zone" in result.stderr, result.stderr
    assert stack.leftovers() == {}


def test_down_with_nothing_up_succeeds() -> None:
    stack = Stack(unique("bunny-relay-e2e"), free_port(), free_port(), free_port())
    result = stack.compose("down")
    assert result.returncode == 0, result.stderr
    assert stack.leftovers() == {}
