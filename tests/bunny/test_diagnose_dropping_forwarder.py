"""bunny diagnose tells a dead hop from a live one whose upstream is silent, against a real
forwarder that drops such queries instead of answering SERVFAIL: Debian's dnsmasq
(``make services``), on loopback in front of a lab zone server, and in the lab's chain of
real CoreDNS processes in network namespaces in place of its forwarder."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest

from lab import dnsmasq
from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from lab.tools import COREDNS, TOXIPROXY, ToolMissingError, tool
from lab.topology import RELAY_NAME, Hop, Mode, Side, Topology, choose_mode, start_topology
from tests.conftest import ZONE

MODE, _ = choose_mode("auto")


@pytest.fixture(scope="module")
def dnsmasq_program() -> str:
    """dnsmasq, at least :data:`lab.dnsmasq.MIN_VERSION` (failing, never skipping, without it)."""
    try:
        return dnsmasq.program()
    except dnsmasq.DnsmasqError as error:
        pytest.fail(str(error), pytrace=False)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def zone() -> AsyncIterator[ZoneServer]:
    async with ZoneServer(zone=ZONE, records={RELAY_NAME: {"A": ["127.0.0.1"]}}) as server:
        yield server


async def _diagnose(*hops: str, place: Any = None) -> dict[str, Any]:
    args = [part for hop in hops for part in ("--hop", hop)]
    code, out, err = await run_bunny(
        "diagnose", f"{RELAY_NAME}:50051", *args, "--query-timeout", "0.5", "--json",
        place=place, timeout=60,
    )  # fmt: skip
    assert code == 1, err
    report: dict[str, Any] = json.loads(out)
    return report


async def test_the_dropping_forwarder_is_named_up_with_a_silent_upstream(
    dnsmasq_program: str, zone: ZoneServer
) -> None:
    port = _free_udp_port()
    upstream = zone.address
    async with dnsmasq.dnsmasq_forwarder("127.0.0.1", port, ZONE, upstream.host, upstream.port):
        zone.go_silent()
        report = await _diagnose(f"forwarder=127.0.0.1:{port}", f"zone={upstream}")

    forwarder, zone_hop = report["hops"]
    assert forwarder["rcode"] == "TIMEOUT"  # dropped: dnsmasq sent nothing back
    assert forwarder["alive"] is True
    assert forwarder["alive_evidence"].startswith((". NS: REFUSED", "version.bind CH TXT: NOERROR"))
    assert zone_hop["alive"] is False
    verdict = report["verdict"]
    assert verdict["failed_hop"] == "forwarder"
    assert f"forwarder (127.0.0.1:{port}) is up" in verdict["explanation"]
    assert f"its upstream is silent: zone ({upstream}) answers nothing" in verdict["explanation"]


async def test_a_forwarder_that_is_not_running_is_named_down(
    dnsmasq_program: str, zone: ZoneServer
) -> None:
    port = _free_udp_port()
    upstream = zone.address
    async with dnsmasq.dnsmasq_forwarder("127.0.0.1", port, ZONE, upstream.host, upstream.port):
        pass  # started and ended: the forwarder's port is closed now
    report = await _diagnose(f"forwarder=127.0.0.1:{port}", f"zone={upstream}")

    forwarder, zone_hop = report["hops"]
    assert forwarder["alive"] is False
    assert zone_hop["rcode"] == "NOERROR"
    assert report["verdict"]["failed_hop"] == "forwarder"
    assert "forwarder is down, or unreachable from here" in report["verdict"]["explanation"]


@pytest.fixture
async def chain_with_dnsmasq(dnsmasq_program: str) -> AsyncIterator[Topology]:
    """The lab's chain with dnsmasq as the VNet forwarder (netns mode: see replace_forwarder)."""
    try:
        tool(COREDNS)
        tool(TOXIPROXY)
    except ToolMissingError as error:
        pytest.fail(str(error), pytrace=False)
    async with start_topology(Mode.NETNS) as topology:
        await dnsmasq.replace_forwarder(topology)
        yield topology


@pytest.mark.root
@pytest.mark.skipif(MODE is not Mode.NETNS, reason="namespaces need root (netns mode)")
async def test_with_the_tunnel_cut_the_chain_names_the_forwarder_whose_upstream_is_silent(
    chain_with_dnsmasq: Topology,
) -> None:
    """As from a VM in the VNet, where the AWS side is reached over the tunnel only: every
    hop is silent for relay's name once the tunnel is cut, yet only the AWS side is gone."""
    chain = chain_with_dnsmasq
    # Asked of dnsmasq itself (it caches nothing), so that no hop holds the answer cached.
    answer = await chain.query(Hop.FORWARDER, side=Side.AZURE)
    assert answer.answer, "dnsmasq forwards relay's name across the tunnel before the cut"
    await chain.cut_tunnel()

    hops = [f"{label}={address}" for label, address in chain.hop_specs()]
    report = await _diagnose(*hops, place=partial(chain.argv, Side.AZURE))

    by_label = {hop["label"]: hop for hop in report["hops"]}
    assert not any(hop["ok"] for hop in report["hops"])
    assert by_label["forwarder"]["rcode"] == "TIMEOUT"
    assert by_label["forwarder"]["alive"] is True
    assert by_label["aws-resolver"]["alive"] is False
    assert by_label["zone"]["alive"] is False
    verdict = report["verdict"]
    assert verdict["failed_hop"] == "forwarder"
    assert "its upstream is silent: aws-resolver" in verdict["explanation"]
    assert "VPN tunnel" in verdict["explanation"]
    assert "dnsmasq" in chain.log("dnsmasq")
