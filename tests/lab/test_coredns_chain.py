"""The cross-cloud DNS path as real CoreDNS processes, hop by hop.

cluster DNS (AKS) -> forwarder (Azure DNS Private Resolver) -> tunnel -> AWS VPC resolver
-> private zone server, each its own CoreDNS from ``.tools/bin`` (``make tools``),
configured from ``deploy/coredns/``. As root the two clouds are network namespaces
and every test id ends in ``[netns]``; otherwise ``[loopback]``. Every query is
sent from the pod, where bunny runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from lab import netns
from lab.tools import COREDNS, TOXIPROXY, ToolMissingError, tool
from lab.topology import (
    DNS_HOPS,
    RELAY_NAME,
    SRV_NAME,
    Hop,
    Mode,
    Side,
    Topology,
    TopologyError,
    choose_mode,
    remove_stale_namespaces,
    start_topology,
)

ZONE = "private.aws.internal"
# BUNNYRELAY_LAB_MODE=loopback runs the loopback variant as root too.
MODE_ASKED = os.environ.get("BUNNYRELAY_LAB_MODE", "auto")
MODE, WHY = choose_mode(MODE_ASKED)
# A lookup the tunnel cannot answer must fail within this: CoreDNS's forward gives
# up after two reads of 2 s each, so the client may see SERVFAIL or its own timeout.
FAILING_LOOKUP_LIMIT = 3.0


def _require_tools() -> None:
    try:
        tool(COREDNS)
        tool(TOXIPROXY)
    except ToolMissingError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=[MODE], ids=[MODE.value])
async def chain(request: pytest.FixtureRequest) -> AsyncIterator[Topology]:
    """The whole chain, started for one test and gone after it."""
    _require_tools()
    async with start_topology(request.param) as topology:
        yield topology


def rcode(message: dns.message.Message) -> str:
    return dns.rcode.to_text(message.rcode())


def addresses(message: dns.message.Message) -> set[str]:
    a_records = [rrset for rrset in message.answer if rrset.rdtype == dns.rdatatype.A]
    return {rr.to_text() for rrset in a_records for rr in rrset}


async def outcome(chain: Topology, hop: Hop, qname: str = RELAY_NAME) -> str:
    """The rcode of ``hop``'s answer, or ``timeout``."""
    try:
        return rcode(await chain.query(hop, qname, time_limit=FAILING_LOOKUP_LIMIT))
    except dns.exception.Timeout:
        return "timeout"


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, interval: float = 0.25
) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return await check()


def test_runs_in_network_namespaces_when_root() -> None:
    """CI runs as root, and then the clouds must be namespaces joined by a veth tunnel."""
    print(f"coredns chain mode: {MODE.value} ({WHY})")
    if MODE_ASKED != "auto":
        assert MODE.value == MODE_ASKED
    elif os.geteuid() == 0:
        assert MODE is Mode.NETNS, WHY
    else:
        assert MODE is Mode.LOOPBACK, WHY


async def test_cluster_dns_answers_relay_through_the_whole_chain(chain: Topology) -> None:
    answer = await chain.query(Hop.CLUSTER_DNS)

    assert rcode(answer) == "NOERROR", chain.logs()
    assert addresses(answer) == set(chain.relay_addresses)

    # Every hop logged the lookup: the answer came through the chain, not around it.
    # (A hop logs after it has answered, so its line may trail the answer a little.)
    async def every_hop_logged() -> bool:
        return "Accepted client" in chain.log(Hop.TUNNEL) and all(
            f"A IN {RELAY_NAME}." in chain.log(hop) for hop in DNS_HOPS
        )

    assert await eventually(every_hop_logged, within=2.0), chain.logs()


async def test_every_hop_serves_the_route53_style_soa_and_the_srv_record(
    chain: Topology,
) -> None:
    for hop in (Hop.ZONE, Hop.AWS_RESOLVER, Hop.FORWARDER, Hop.CLUSTER_DNS):
        soa = await chain.query(hop, ZONE, "SOA")
        srv = await chain.query(hop, SRV_NAME, "SRV")

        assert rcode(soa) == "NOERROR", f"{hop}\n{chain.logs()}"
        record = soa.answer[0][0]
        assert record.to_text() == (
            "ns-1536.awsdns-00.co.uk. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"
        ), hop
        assert [rr.to_text() for rrset in srv.answer for rr in rrset] == [
            f"0 0 {chain.zone.relay_ports[0]} {RELAY_NAME}."
        ], hop


async def test_search_list_names_are_nxdomain_at_the_cluster_dns(chain: Topology) -> None:
    """ndots:5 makes a pod ask these first; the cluster answers them itself."""
    for suffix in ("default.svc.cluster.local", "svc.cluster.local", "cluster.local"):
        answer = await chain.query(Hop.CLUSTER_DNS, f"{RELAY_NAME}.{suffix}")
        assert rcode(answer) == "NXDOMAIN", suffix
        assert answer.authority, "negative answers carry an SOA so they can be cached"
    assert f"{RELAY_NAME}.cluster.local." not in chain.log(Hop.FORWARDER)


async def test_cut_tunnel_fails_the_zone_at_the_cluster_dns_while_the_zone_answers(
    chain: Topology,
) -> None:
    await chain.cut_tunnel()

    assert await outcome(chain, Hop.CLUSTER_DNS) in {"timeout", "SERVFAIL"}, chain.logs()
    assert await outcome(chain, Hop.FORWARDER) in {"timeout", "SERVFAIL"}, chain.logs()
    # Past the tunnel everything still answers, asked directly.
    for hop in (Hop.AWS_RESOLVER, Hop.ZONE):
        answer = await chain.query(hop)
        assert rcode(answer) == "NOERROR", hop
        assert addresses(answer) == set(chain.relay_addresses), hop

    await chain.restore_tunnel()

    async def chain_answers() -> bool:
        return await outcome(chain, Hop.CLUSTER_DNS) == "NOERROR"

    # The cluster DNS may keep its SERVFAIL for a few seconds (cache), then it answers.
    assert await eventually(chain_answers, within=15.0), chain.logs()


async def test_removed_record_is_nxdomain_through_the_chain(chain: Topology) -> None:
    await chain.remove_relay()

    for hop in (Hop.ZONE, Hop.AWS_RESOLVER, Hop.FORWARDER, Hop.CLUSTER_DNS):
        answer = await chain.query(hop)
        assert rcode(answer) == "NXDOMAIN", f"{hop}\n{chain.logs()}"
        soa = answer.authority[0]
        assert soa.rdtype == dns.rdatatype.SOA, hop
        assert soa[0].serial == chain.zone.serial, hop


async def test_missing_conditional_forward_is_nxdomain_only_at_the_cluster_dns(
    chain: Topology,
) -> None:
    await chain.remove_conditional_forward()

    assert rcode(await chain.query(Hop.CLUSTER_DNS)) == "NXDOMAIN", chain.logs()
    for hop in (Hop.FORWARDER, Hop.AWS_RESOLVER, Hop.ZONE):
        answer = await chain.query(hop)
        assert rcode(answer) == "NOERROR", hop
        assert addresses(answer) == set(chain.relay_addresses), hop

    await chain.restore_conditional_forward()
    assert rcode(await chain.query(Hop.CLUSTER_DNS)) == "NOERROR", chain.logs()


async def test_aws_resolver_down_makes_the_forwarder_answer_servfail(chain: Topology) -> None:
    await chain.stop(Hop.AWS_RESOLVER)

    assert await outcome(chain, Hop.FORWARDER) == "SERVFAIL", chain.logs()
    assert await outcome(chain, Hop.CLUSTER_DNS) == "SERVFAIL", chain.logs()
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        await chain.query(Hop.AWS_RESOLVER, tcp=True)
    assert rcode(await chain.query(Hop.ZONE)) == "NOERROR"

    await chain.start(Hop.AWS_RESOLVER)

    async def forwarder_answers() -> bool:
        return await outcome(chain, Hop.FORWARDER) == "NOERROR"

    assert await eventually(forwarder_answers, within=10.0), chain.logs()


async def test_changed_a_record_reaches_the_cluster_dns_within_its_ttl(chain: Topology) -> None:
    old, new = chain.relay_addresses
    assert addresses(await chain.query(Hop.CLUSTER_DNS)) == {old, new}  # now cached

    changed_at = time.monotonic()
    await chain.set_zone(relay_addresses=[new])

    assert addresses(await chain.query(Hop.ZONE)) == {new}

    async def cluster_dns_moved() -> bool:
        return addresses(await chain.query(Hop.CLUSTER_DNS)) == {new}

    # Each hop's cache counts the TTL down from the zone's answer: at most one TTL
    # (plus the zone's 1 s reload) until the pod sees the move.
    assert await eventually(cluster_dns_moved, within=chain.zone.ttl + 2.0), chain.logs()
    assert time.monotonic() - changed_at < chain.zone.ttl + 2.0


async def test_tunnel_latency_slows_only_what_crosses_the_tunnel(chain: Topology) -> None:
    latency = 0.4
    await chain.set_tunnel_latency(int(latency * 1000))

    started = time.monotonic()
    answer = await chain.query(Hop.FORWARDER, time_limit=latency + 2.0)
    crossed = time.monotonic() - started
    started = time.monotonic()
    await chain.query(Hop.AWS_RESOLVER)
    direct = time.monotonic() - started

    assert rcode(answer) == "NOERROR", chain.logs()
    assert crossed >= latency
    assert direct < crossed

    await chain.clear_tunnel_faults()
    started = time.monotonic()
    await chain.query(Hop.FORWARDER, SRV_NAME, "SRV")
    assert time.monotonic() - started < crossed


async def test_tunnel_dropping_everything_fails_the_forwarder_until_cleared(
    chain: Topology,
) -> None:
    await chain.set_tunnel_drops(1.0)

    assert await outcome(chain, Hop.FORWARDER) in {"timeout", "SERVFAIL"}, chain.logs()

    await chain.clear_tunnel_faults()

    async def forwarder_answers() -> bool:
        return await outcome(chain, Hop.FORWARDER) == "NOERROR"

    assert await eventually(forwarder_answers, within=10.0), chain.logs()


async def test_relay_addresses_are_reachable_from_the_pod(chain: Topology) -> None:
    """relay listens on the aws side at an A record's address; the pod connects there."""
    address = chain.relay_addresses[0]

    def listen() -> socket.socket:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind((address, 0))
        server.listen(1)
        return server

    def connect(port: int) -> None:
        with socket.create_connection((address, port), timeout=2.0):
            pass

    server = await chain.run_in(Side.AWS, listen)
    try:
        await chain.run_in(Side.POD, lambda: connect(server.getsockname()[1]))
    finally:
        server.close()


async def test_pod_resolv_conf_is_kubernetes_like(chain: Topology) -> None:
    text = chain.resolv_conf.read_text()

    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in text
    assert f"nameserver {chain.cluster_dns.host}" in text
    assert "options ndots:5" in text
    pod = chain.namespace(Side.POD)
    if pod is not None:  # `ip netns exec` shows it as the pod's /etc/resolv.conf
        assert (pod.etc_dir / "resolv.conf").read_text() == text


@pytest.mark.parametrize("fail", [False, True], ids=["clean-exit", "failing-body"])
async def test_leaves_no_process_namespace_or_file_behind(fail: bool) -> None:
    _require_tools()
    pids: list[int] = []
    names: list[str] = []
    workdir = Path()
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        async with start_topology(MODE) as topology:
            pids = [process.pid for process in topology.processes()]
            names = [ns.name for side in Side if (ns := topology.namespace(side)) is not None]
            workdir = topology.workdir
            if fail:
                raise RuntimeError("the test body failed")

    assert len(pids) == len(Hop)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not workdir.exists()
    if MODE is Mode.NETNS:
        assert len(names) == 3
        remaining = set(await netns.names())
        assert not remaining & set(names)
        assert not any((netns.ETC_NETNS_DIR / name).exists() for name in names)


@pytest.mark.root
@pytest.mark.skipif(MODE is not Mode.NETNS, reason="namespaces need root (netns mode)")
async def test_namespaces_left_by_a_dead_run_are_removed_at_the_next_start() -> None:
    finished = await asyncio.create_subprocess_exec("true")
    await finished.wait()  # its pid is now free: a run that died without cleaning up
    stale = f"brl{finished.pid}x1-pod"
    await netns.create(stale)
    try:
        assert stale in await remove_stale_namespaces()
        assert stale not in await netns.names()
    finally:
        await netns.delete(stale)


async def test_a_start_that_fails_says_why_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_tools()
    broken = tmp_path / COREDNS
    broken.write_text(
        "#!/bin/sh\necho 'plugin/forward: this CoreDNS is broken on purpose'\nexit 1\n"
    )
    broken.chmod(0o755)
    (tmp_path / TOXIPROXY).symlink_to(tool(TOXIPROXY))
    monkeypatch.setenv("BUNNYRELAY_TOOLS_DIR", str(tmp_path))
    before = set(await netns.names()) if MODE is Mode.NETNS else set()

    with pytest.raises(TopologyError, match="broken on purpose"):
        async with start_topology(MODE):
            pytest.fail("the topology started with a CoreDNS that exits at once")

    if MODE is Mode.NETNS:
        assert set(await netns.names()) == before
