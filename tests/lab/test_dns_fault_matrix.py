"""The DNS fault matrix: each fault injected for real on the CoreDNS chain, seen through bunny.

bunny runs where a pod would (the ``pod`` side of the topology, with a pod's
resolv.conf) and relay on the AWS side at the zone's A records. For each case
the test checks what a user wants: jobs that keep flowing, or a clear typed
error within a bounded time, and ``bunny diagnose`` naming the hop that broke.
What bunny sent is read from its own reports (``resolve --json`` lists every
query and attempt, exactly what its spans record).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lab.processes import run_bunny
from lab.tools import COREDNS, TOXIPROXY, ToolMissingError, tool
from lab.topology import RELAY_NAME, Hop, Side, Topology, start_topology
from tests.lab.test_coredns_chain import MODE

RELAY_PORT = 50051
# A failed lookup must end within this: 2 attempts x 1 s per query, the search list's
# candidates, and process start-up, with room for a loaded 2-core machine.
BOUNDED_FAILURE_S = 15.0


@pytest.fixture(params=[MODE], ids=[MODE.value])
async def chain(request: pytest.FixtureRequest) -> AsyncIterator[Topology]:
    for name in (COREDNS, TOXIPROXY):
        try:
            tool(name)
        except ToolMissingError as error:
            pytest.fail(str(error), pytrace=False)
    async with start_topology(request.param, ttl=1, soa_ttl=1, relay_port=RELAY_PORT) as t:
        yield t


@pytest.fixture
def pod_resolv_conf(chain: Topology, tmp_path: Path) -> Path:
    """The pod's resolv.conf (search list, ndots:5), with short timeouts for the tests."""
    path = tmp_path / "resolv.conf"
    path.write_text(
        f"nameserver {chain.cluster_dns.host}\n"
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5 timeout:1 attempts:2\n"
    )
    return path


async def _start_relays(chain: Topology, count: int = 1) -> list[str]:
    """relay on the AWS side at the first ``count`` A-record addresses; their IP:PORTs."""
    started = []
    for index, address in enumerate(chain.relay_addresses[:count]):
        listen = f"{address}:{RELAY_PORT}"
        argv = [sys.executable, "-m", "relay", "serve", "--listen", listen]
        # Each relay keeps its own store: side by side they must not share one file.
        env = {**os.environ, "RELAY_STATE_DIR": str(chain.workdir / f"relay-{index}-state")}
        handle = await chain.spawn(Side.AWS, f"relay-{index}", argv, env=env)
        deadline = time.monotonic() + 15
        while "relay listening on" not in handle.log_path.read_text():
            if handle.process.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"relay at {listen} did not start:\n{handle.log_path.read_text()}")
            await asyncio.sleep(0.05)
        started.append(listen)
    return started


def _dns_args(chain: Topology, resolv_conf: Path) -> list[str]:
    return [
        "--resolv-conf", str(resolv_conf),
        "--nameserver", str(chain.cluster_dns),
        "--family", "ipv4",
    ]  # fmt: skip


async def _bunny(chain: Topology, *args: str) -> tuple[int, str, str]:
    """Run bunny in the pod; (exit status, stdout, stderr)."""
    return await run_bunny(*args, timeout=60.0, place=functools.partial(chain.argv, Side.POD))


class TimedSubmit:
    """``bunny submit --json`` running in the pod; its lines kept with their arrival times."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, chain: Topology, *args: str) -> TimedSubmit:
        argv = chain.argv(Side.POD, [sys.executable, "-m", "bunny", "submit", "--json", *args])
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            async with self._arrived:
                self.lines.append((time.monotonic(), json.loads(raw)))
                self._arrived.notify_all()
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for_lines(self, count: int) -> None:
        async with asyncio.timeout(30), self._arrived:
            await self._arrived.wait_for(lambda: len(self.lines) >= count or self._reader.done())

    async def finish(self) -> int:
        try:
            async with asyncio.timeout(90):
                await self._reader
                return await self.process.wait()
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()


async def _diagnose(chain: Topology, *extra: str) -> dict[str, Any]:
    hops = [arg for label, server in chain.hop_specs() for arg in ("--hop", f"{label}={server}")]
    _, out, err = await _bunny(
        chain, "diagnose", f"{RELAY_NAME}:{RELAY_PORT}", *hops, "--query-timeout", "1", "--json",
        *extra,
    )  # fmt: skip
    assert out, err
    report: dict[str, Any] = json.loads(out)
    return report


async def test_healthy_chain_runs_jobs_and_diagnose_passes(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    relays = await _start_relays(chain)
    code, out, err = await _bunny(
        chain, "submit", "--target", f"{RELAY_NAME}:{RELAY_PORT}", "--json", "--count", "3",
        *_dns_args(chain, pod_resolv_conf),
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["relay_address"] for line in lines} <= {
        f"{a}:{RELAY_PORT}" for a in chain.relay_addresses
    }
    report = await _diagnose(chain)
    # Only the first A record has a relay; the second address fails to connect.
    assert [h["rcode"] for h in report["hops"]] == ["NOERROR"] * 4
    assert any(r["job_ok"] and r["address"] == relays[0] for r in report["relay"])


async def test_tunnel_cut_after_first_lookup_jobs_flow_from_stale_cache(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    # TTL 5: the cluster DNS's CoreDNS cache keeps answers at least 5 s (its MINTTL),
    # so the cut shows once that much has passed.
    await chain.set_zone(relay_addresses=chain.relay_addresses[:1], ttl=5)
    await _start_relays(chain)
    run = await TimedSubmit.start(
        chain, "--target", f"{RELAY_NAME}:{RELAY_PORT}", "--kind", "sleep", "--payload", "50",
        "--count", "200", "--concurrency", "1", *_dns_args(chain, pod_resolv_conf),
    )  # fmt: skip
    await run.wait_for_lines(1)
    await chain.cut_tunnel()
    code = await run.finish()

    outcomes = [line for _, line in run.lines]
    assert len(outcomes) == 200
    assert all(o["status"] == "SUCCEEDED" for o in outcomes), outcomes
    assert code == 0
    assert "stale-cache" in {o["dns_source"] for o in outcomes}, "the cut must have been noticed"

    report = await _diagnose(chain)
    assert report["verdict"]["failed_hop"] == "forwarder", report
    assert "tunnel" in report["verdict"]["explanation"]


async def test_tunnel_cut_before_any_lookup_is_a_typed_error_in_bounded_time(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    await chain.cut_tunnel()
    started = time.monotonic()
    code, out, err = await _bunny(
        chain, "resolve", RELAY_NAME, *_dns_args(chain, pod_resolv_conf), "--json"
    )
    elapsed = time.monotonic() - started
    assert code == 1, err
    report = json.loads(out)
    assert report["error"]["type"] in {"DnsTimeout", "DnsServerFailure"}
    assert str(chain.cluster_dns) in report["error"]["message"]
    # The failing candidate was asked twice (attempts:2), each a query of its own.
    failing = [q for q in report["queries"] if q["rcode"] in {"TIMEOUT", "SERVFAIL"}]
    assert [q["attempt"] for q in failing] == [1, 2]
    assert elapsed < BOUNDED_FAILURE_S


async def test_record_missing_in_the_zone(chain: Topology, pod_resolv_conf: Path) -> None:
    await chain.remove_relay()
    code, out, _ = await _bunny(
        chain, "submit", "--target", f"{RELAY_NAME}:{RELAY_PORT}", "--json",
        *_dns_args(chain, pod_resolv_conf),
    )  # fmt: skip
    assert code == 1
    error = json.loads(out)["error"]
    assert error["type"] == "NameNotFound"
    assert "missing from the zone" in error["likely_cause"]
    report = await _diagnose(chain)
    assert report["verdict"]["failed_hop"] == "zone"
    assert "missing from the zone" in report["verdict"]["explanation"]


async def test_conditional_forward_missing(chain: Topology, pod_resolv_conf: Path) -> None:
    await chain.remove_conditional_forward()
    code, out, _ = await _bunny(
        chain, "resolve", RELAY_NAME, *_dns_args(chain, pod_resolv_conf), "--json"
    )
    assert code == 1
    assert json.loads(out)["error"]["type"] == "NameNotFound"
    report = await _diagnose(chain)
    assert report["verdict"]["failed_hop"] == "cluster-dns"
    assert "conditional forward" in report["verdict"]["explanation"]


async def test_forwarder_upstream_down_is_servfail(chain: Topology, pod_resolv_conf: Path) -> None:
    await chain.stop(Hop.AWS_RESOLVER)
    code, out, _ = await _bunny(
        chain, "resolve", RELAY_NAME, *_dns_args(chain, pod_resolv_conf), "--json"
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert error["type"] == "DnsServerFailure"
    report = await _diagnose(chain)
    assert report["verdict"]["failed_hop"] == "aws-resolver"
    assert [h["rcode"] for h in report["hops"]][:2] == ["SERVFAIL", "SERVFAIL"]


async def test_queries_dropped_on_the_tunnel_are_survived_by_retries(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    await chain.set_zone(relay_addresses=chain.relay_addresses[:1], ttl=1)
    await _start_relays(chain)
    await chain.set_tunnel_drops(0.3)
    run = await TimedSubmit.start(
        chain, "--target", f"{RELAY_NAME}:{RELAY_PORT}", "--count", "20", "--concurrency", "1",
        "--kind", "sleep", "--payload", "100", "--timeout", "20",
        *_dns_args(chain, pod_resolv_conf),
    )  # fmt: skip
    code = await run.finish()
    outcomes = [line for _, line in run.lines]
    assert len(outcomes) == 20
    assert all(o["status"] == "SUCCEEDED" for o in outcomes), outcomes
    assert code == 0


@pytest.mark.parametrize(
    ("latency_ms", "succeeds"), [(300, True), (2500, False)], ids=["under", "over"]
)
async def test_slow_tunnel_under_and_over_the_resolver_timeout(
    chain: Topology, pod_resolv_conf: Path, latency_ms: int, succeeds: bool
) -> None:
    await chain.set_tunnel_latency(latency_ms)
    started = time.monotonic()
    code, out, err = await _bunny(
        chain, "resolve", f"{RELAY_NAME}.", "--nameserver", str(chain.cluster_dns),
        "--resolv-conf", str(pod_resolv_conf), "--family", "ipv4", "--json",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    report = json.loads(out)
    if succeeds:
        assert code == 0, err
        (query,) = report["queries"]
        assert query["latency_ms"] >= latency_ms
    else:
        assert code == 1
        assert report["error"]["type"] in {"DnsTimeout", "DnsServerFailure"}
        assert [q["attempt"] for q in report["queries"]] == [1, 2]
        assert elapsed < BOUNDED_FAILURE_S


async def test_relay_moves_and_bunny_follows_within_ttl_plus_one_second(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    ttl = 5  # the cluster DNS's CoreDNS cache keeps answers at least 5 s (its MINTTL)
    first, second = await _start_relays(chain, count=2)
    await chain.set_zone(relay_addresses=chain.relay_addresses[:1], ttl=ttl)
    run = await TimedSubmit.start(
        chain, "--target", f"{RELAY_NAME}:{RELAY_PORT}", "--kind", "sleep", "--payload", "25",
        "--count", "400", "--concurrency", "1", *_dns_args(chain, pod_resolv_conf),
    )  # fmt: skip
    await run.wait_for_lines(10)
    await chain.set_zone(relay_addresses=chain.relay_addresses[1:2], ttl=ttl)
    moved_at = time.monotonic()  # set_zone returns once the zone server serves the change
    code = await run.finish()

    assert all(line["status"] == "SUCCEEDED" for _, line in run.lines)
    assert code == 0
    assert run.lines[0][1]["relay_address"] == first
    first_on_new = next(at for at, line in run.lines if line["relay_address"] == second)
    print(f"bunny followed the move after {first_on_new - moved_at:.2f} s (TTL {ttl} s)")
    assert first_on_new - moved_at <= ttl + 1
    assert all(line["relay_address"] == second for at, line in run.lines if at > first_on_new)


async def test_ndots_5_wastes_queries_and_the_recommended_settings_send_one(
    chain: Topology, pod_resolv_conf: Path
) -> None:
    code, out, err = await _bunny(
        chain, "resolve", RELAY_NAME, *_dns_args(chain, pod_resolv_conf), "--json"
    )
    assert code == 0, err
    queries = json.loads(out)["queries"]
    assert [q["rcode"] for q in queries] == ["NXDOMAIN"] * 3 + ["NOERROR"]
    assert queries[0]["fqdn"].rstrip(".") == f"{RELAY_NAME}.default.svc.cluster.local"

    for recommended in ([f"{RELAY_NAME}."], [RELAY_NAME, "--ndots", "3"]):
        code, out, err = await _bunny(
            chain, "resolve", *recommended, *_dns_args(chain, pod_resolv_conf), "--json"
        )
        assert code == 0, err
        assert len(json.loads(out)["queries"]) == 1
