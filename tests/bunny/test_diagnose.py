"""bunny diagnose names the hop that broke, and says why in words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, ZONE, StartRelay

LABELS = ("cluster-dns", "forwarder", "aws-resolver", "zone")


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
