"""bunny diagnose names the hop that broke, and says why in words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from bunny.diagnose import HopReport, RelayReport, judge
from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, ZONE, StartRelay

LABELS = ("cluster-dns", "forwarder", "aws-resolver", "zone")


def _hops(*rcodes: str) -> list[HopReport]:
    return [
        HopReport(label, f"10.0.0.{i}:53", rcode, ["10.1.2.3"] if rcode == "NOERROR" else [],
                  30 if rcode == "NOERROR" else None, 1.0, rcode == "NOERROR",
                  None if rcode == "NOERROR" else rcode)
        for i, (label, rcode) in enumerate(zip(LABELS, rcodes, strict=True))
    ]  # fmt: skip


GOOD_RELAY = [RelayReport("10.1.2.3:50051", True, "SERVING", True, "relay-a", 2.0, None)]


@pytest.mark.parametrize(
    ("rcodes", "failed_hop", "words"),
    [
        (("NXDOMAIN",) * 4, "zone", "record is missing from the zone"),
        (("NXDOMAIN", "NOERROR", "NOERROR", "NOERROR"), "cluster-dns", "conditional forward"),
        (("SERVFAIL", "TIMEOUT", "NOERROR", "NOERROR"), "forwarder", "tunnel or its routes"),
        (("SERVFAIL", "SERVFAIL", "TIMEOUT", "NOERROR"), "aws-resolver", "aws-resolver to zone"),
        (("SERVFAIL", "SERVFAIL", "TIMEOUT", "TIMEOUT"), "aws-resolver", "tunnel or its routes"),
        (("REFUSED", "NOERROR", "NOERROR", "NOERROR"), "cluster-dns", "ACL"),
        (("SERVFAIL", "SERVFAIL", "SERVFAIL", "SERVFAIL"), "zone", "upstream failed"),
    ],
)
def test_verdict_names_the_hop_and_the_reason(
    rcodes: tuple[str, ...], failed_hop: str, words: str
) -> None:
    verdict = judge(_hops(*rcodes), GOOD_RELAY)
    assert not verdict.ok
    assert verdict.failed_hop == failed_hop
    assert words in verdict.explanation


def _silent_hops(*states: str) -> list[HopReport]:
    """Hops that give no answer for the name: ``up`` ones answer a question of their own,
    ``down`` ones nothing at all; any other state is the rcode they answered the name with."""
    hops = _hops(*("TIMEOUT" if state in ("up", "down") else state for state in states))
    for hop, state in zip(hops, states, strict=True):
        if state in ("up", "down"):
            hop.alive = state == "up"
            hop.alive_evidence = ". NS: REFUSED in 0.3 ms" if hop.alive else "no answer"
    return hops


@pytest.mark.parametrize(
    ("states", "failed_hop", "words"),
    [
        # A forwarder that drops what its upstream leaves unanswered, the tunnel behind it cut.
        (("up", "up", "down", "down"), "forwarder", "forwarder (10.0.0.1:53) is up (it answers"),
        (("up", "up", "down", "down"), "forwarder", "aws-resolver (10.0.0.2:53) answers nothing"),
        (("SERVFAIL", "up", "down", "down"), "forwarder", "its upstream is silent"),
        (("down", "down", "down", "down"), "cluster-dns", "is down, or unreachable from here"),
        (("up", "up", "up", "up"), "zone", "the furthest hop asked, is up"),
        (("SERVFAIL", "down", "NOERROR", "NOERROR"), "forwarder", "down, or unreachable"),
        (("SERVFAIL", "up", "NOERROR", "NOERROR"), "forwarder", "itself is up"),
    ],
)
def test_verdict_tells_a_dead_hop_from_one_whose_upstream_is_silent(
    states: tuple[str, ...], failed_hop: str, words: str
) -> None:
    verdict = judge(_silent_hops(*states), GOOD_RELAY)
    assert not verdict.ok
    assert verdict.failed_hop == failed_hop
    assert words in verdict.explanation


def test_a_missing_forward_at_the_cluster_dns_names_both_places_to_add_it() -> None:
    """On AKS the zone leaves the cluster DNS by the coredns-custom block or, when a DNS
    forwarding ruleset is linked to the cluster's VNet, by Azure DNS applying its rule:
    NXDOMAIN there while the forwarder answers means neither is in place."""
    verdict = judge(_hops("NXDOMAIN", "NOERROR", "NOERROR", "NOERROR"), GOOD_RELAY)
    assert verdict.failed_hop == "cluster-dns"
    assert "neither the coredns-custom block" in verdict.explanation
    assert "private-aws-internal.server in kube-system/coredns-custom" in verdict.explanation
    assert "DNS forwarding ruleset rule for the zone" in verdict.explanation
    assert "linked to the cluster's VNet" in verdict.explanation


def test_a_missing_forward_at_the_forwarder_names_its_ruleset_rule() -> None:
    """Both paths from the cluster DNS end at the Private Resolver's ruleset rule: when the
    forwarder says NXDOMAIN and the AWS resolver answers, that rule is what is missing."""
    for rcodes in (
        ("NXDOMAIN", "NXDOMAIN", "NOERROR", "NOERROR"),
        ("NOERROR", "NXDOMAIN", "NOERROR", "NOERROR"),
    ):
        verdict = judge(_hops(*rcodes), GOOD_RELAY)
        assert verdict.failed_hop == "forwarder"
        assert "forwarding ruleset's rule for the zone" in verdict.explanation
        assert "linked to the resolver's VNet" in verdict.explanation
        assert "neither the coredns-custom block" not in verdict.explanation


def test_verdict_is_ok_only_when_every_hop_and_relay_work() -> None:
    assert judge(_hops(*["NOERROR"] * 4), GOOD_RELAY).ok
    broken = [RelayReport("10.1.2.3:50051", False, "UNKNOWN", False, "", 2.0, "UNAVAILABLE")]
    verdict = judge(_hops(*["NOERROR"] * 4), broken)
    assert not verdict.ok
    assert verdict.failed_hop == "relay"


@pytest.fixture
async def hops() -> AsyncIterator[list[ZoneServer]]:
    """Four lab DNS servers standing in for the four hops, each answering on its own."""
    servers = [ZoneServer(zone=ZONE, negative_ttl=1) for _ in LABELS]
    for server in servers:
        await server.start()
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop()


def _hop_args(servers: list[ZoneServer]) -> list[str]:
    args = []
    for label, server in zip(LABELS, servers, strict=True):
        args += ["--hop", f"{label}={server.address}"]
    return args


async def test_diagnose_passes_when_every_hop_answers_and_relay_runs_a_job(
    hops: list[ZoneServer], start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        for server in hops:
            server.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, out, err = await run_bunny(
            "diagnose", f"{RELAY_NAME}:{relay.port}", *_hop_args(hops), "--json"
        )
    assert code == 0, err
    report = json.loads(out)
    assert report["verdict"] == {
        "ok": True,
        "failed_hop": None,
        "explanation": f"every hop answers and relay runs jobs at 127.0.0.1:{relay.port}",
    }
    assert [h["label"] for h in report["hops"]] == list(LABELS)
    assert all(h["rcode"] == "NOERROR" and h["answers"] == ["127.0.0.1"] for h in report["hops"])
    (checked,) = report["relay"]
    assert checked["health"] == "SERVING"
    assert checked["job_ok"]


async def test_diagnose_names_a_silent_hop_while_the_zone_answers(
    hops: list[ZoneServer],
) -> None:
    for server in hops:
        server.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    hops[0].answer_with_rcode("SERVFAIL")
    hops[1].go_silent()
    code, out, err = await run_bunny(
        "diagnose", f"{RELAY_NAME}:50051", *_hop_args(hops), "--query-timeout", "0.3", "--json"
    )
    assert code == 1, err
    report = json.loads(out)
    assert report["verdict"]["failed_hop"] == "forwarder"
    # It answers nothing at all, not only nothing for relay's name.
    assert "forwarder is down, or unreachable from here" in report["verdict"]["explanation"]
    assert report["hops"][1]["rcode"] == "TIMEOUT"
    assert report["hops"][1]["alive"] is False


async def test_diagnose_shows_what_ndots_costs_and_prints_a_table(
    hops: list[ZoneServer], tmp_path_factory: pytest.TempPathFactory, start_relay: StartRelay
) -> None:
    cluster = hops[0]
    cluster.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    resolv_conf = tmp_path_factory.mktemp("pod") / "resolv.conf"
    resolv_conf.write_text(
        f"nameserver {cluster.address}\n"
        "search team.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n"
    )
    async with start_relay() as relay:
        code, out, err = await run_bunny(
            "diagnose", f"{RELAY_NAME}:{relay.port}", "--hop", f"cluster-dns={cluster.address}",
            "--resolv-conf", str(resolv_conf),
        )  # fmt: skip
    assert code == 0, err
    assert "4 queries sent, 3 wasted" in out
    assert f"trailing dot ({RELAY_NAME}.)" in out
    assert out.rstrip().splitlines()[-1].startswith("OK: ")


async def test_diagnose_checks_a_mutual_tls_relay_with_bunnys_tls_settings(
    hops: list[ZoneServer], tmp_path: Path, start_relay: StartRelay
) -> None:
    """As the chart's `helm test` runs it: BUNNY_TLS_* from the environment, relay's
    certificate checked against the name while 127.0.0.1 is dialled. Certificates are
    made here (trustme)."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    relay_leaf = server_ca.issue_cert(RELAY_NAME)
    bunny_leaf = client_ca.issue_cert("bunny")
    files = {
        "relay.crt": relay_leaf.cert_chain_pems[0],
        "relay.key": relay_leaf.private_key_pem,
        "bunny.crt": bunny_leaf.cert_chain_pems[0],
        "bunny.key": bunny_leaf.private_key_pem,
        "relay-ca.pem": server_ca.cert_pem,
        "clients-ca.pem": client_ca.cert_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / name))
    for server in hops:
        server.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    relay_tls = {
        "--tls-cert": "relay.crt",
        "--tls-key": "relay.key",
        "--tls-client-ca": "clients-ca.pem",
    }
    args = [part for flag, name in relay_tls.items() for part in (flag, str(tmp_path / name))]
    async with start_relay(args=args) as relay:
        target = f"{RELAY_NAME}:{relay.port}"
        env = {
            "BUNNY_TLS_CA": str(tmp_path / "relay-ca.pem"),
            "BUNNY_TLS_CERT": str(tmp_path / "bunny.crt"),
            "BUNNY_TLS_KEY": str(tmp_path / "bunny.key"),
        }
        code, out, err = await run_bunny("diagnose", target, *_hop_args(hops), "--json", env=env)
        plain_code, plain_out, _ = await run_bunny("diagnose", target, *_hop_args(hops), "--json")
    assert code == 0, err
    (checked,) = json.loads(out)["relay"]
    assert (checked["health"], checked["job_ok"]) == ("SERVING", True)
    assert plain_code == 1
    assert json.loads(plain_out)["verdict"]["failed_hop"] == "relay"
