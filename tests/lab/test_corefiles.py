"""The CoreDNS configuration's one source (deploy/coredns/) and how it is rendered."""

from __future__ import annotations

import re

import dns.zone
import pytest

from lab import corefiles
from lab.corefiles import RenderError, Role


def test_every_role_has_a_source_file_and_its_placeholders() -> None:
    expected = {
        Role.CLUSTER_DNS: set(),
        Role.CONDITIONAL_FORWARD: {"forwarder"},
        Role.FORWARDER: {"aws_resolver"},
        Role.AWS_RESOLVER: {"zone_server"},
        Role.ZONE_SERVER: set(),
        Role.ZONE_FILE: {"ttl", "soa_ttl", "serial", "relay_addresses", "relay_ports"},
    }
    assert {role: set(corefiles.placeholders(role)) for role in Role} == expected


def test_conditional_forward_is_its_own_server_block_for_the_zone() -> None:
    """AKS imports *.server files as server blocks; a second `forward .` in the default
    block crashes CoreDNS (Azure/AKS#2623), so the zone gets a block of its own."""
    text = corefiles.render(Role.CONDITIONAL_FORWARD, forwarder="10.224.0.4:53")
    blocks = re.findall(r"^(\S[^\n{]*)\{", text, flags=re.MULTILINE)

    assert [block.strip() for block in blocks] == ["private.aws.internal"]
    assert "    forward . 10.224.0.4:53\n" in text
    assert "    log\n" in text
    assert "bind" not in text


def test_cluster_dns_imports_the_conditional_forward_as_aks_does() -> None:
    text = corefiles.render(Role.CLUSTER_DNS)
    assert "\nimport custom/*.server\n" in text
    assert corefiles.CONDITIONAL_FORWARD_KEY.endswith(".server")


def test_every_server_block_logs_its_queries() -> None:
    """So that a failing lookup shows at the hop where it failed."""
    values = {"forwarder": "a:53", "aws_resolver": "b:53", "zone_server": "c:53"}
    for role in Role:
        if role is Role.ZONE_FILE:
            continue
        text = corefiles.render(
            role, **{name: values[name] for name in corefiles.placeholders(role)}
        )
        bodies = re.findall(r"^\S[^\n]*\{\n(.*?)^\}", text, flags=re.MULTILINE | re.DOTALL)
        assert bodies, role
        for body in bodies:
            assert re.search(r"^    log$", body, flags=re.MULTILINE), f"{role}: {body}"


def test_bind_goes_into_every_server_block_and_nowhere_else() -> None:
    text = corefiles.bind_to(corefiles.render(Role.CLUSTER_DNS), "10.253.1.10")
    assert text.count("    bind 10.253.1.10\n") == 2  # cluster.local and .
    assert "{\n    bind 10.253.1.10\n    log\n" in text
    zone = corefiles.render(
        Role.ZONE_FILE, ttl=1, soa_ttl=1, serial=1, relay_addresses=[], relay_ports=[]
    )
    with pytest.raises(RenderError, match="no server block"):
        corefiles.bind_to(zone, "10.0.0.1")


def test_zone_file_has_route53_soa_ns_and_a_line_per_relay_address() -> None:
    text = corefiles.render(
        Role.ZONE_FILE,
        ttl=300,
        soa_ttl=900,
        serial=7,
        relay_addresses=["10.0.1.10", "10.0.2.10"],
        relay_ports=[50051],
    )
    zone = dns.zone.from_text(text, origin="private.aws.internal.", relativize=False)
    soa = zone.find_rdataset("private.aws.internal.", "SOA")
    assert soa.ttl == 900
    assert soa[0].to_text() == (
        "ns-1536.awsdns-00.co.uk. awsdns-hostmaster.amazon.com. 7 7200 900 1209600 86400"
    )
    assert len(zone.find_rdataset("private.aws.internal.", "NS")) == 4
    a = zone.find_rdataset("relay.private.aws.internal.", "A")
    assert (a.ttl, sorted(rr.to_text() for rr in a)) == (300, ["10.0.1.10", "10.0.2.10"])
    srv = zone.find_rdataset("_grpc._tcp.relay.private.aws.internal.", "SRV")
    assert [rr.to_text() for rr in srv] == ["0 0 50051 relay.private.aws.internal."]


def test_an_empty_list_drops_its_line() -> None:
    text = corefiles.render(
        Role.ZONE_FILE, ttl=5, soa_ttl=5, serial=2, relay_addresses=[], relay_ports=[]
    )
    assert "relay" not in text.split("$TTL")[1].split("SOA")[0]
    assert not re.search(r"^relay\s", text, flags=re.MULTILINE)
    assert "_grpc._tcp" not in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "missing forwarder"),
        ({"forwarder": "a:53", "upstream": "b:53"}, "unknown upstream"),
        ({"forwarder": ""}, "single non-empty words"),
        ({"forwarder": "a:53 b:53"}, "single non-empty words"),
    ],
)
def test_render_refuses_to_leave_a_hole_or_take_a_stray_value(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        corefiles.render(Role.CONDITIONAL_FORWARD, **values)


def test_command_prints_the_rendered_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert corefiles.main(["conditional-forward", "forwarder=10.224.0.4:53"]) == 0
    assert capsys.readouterr().out == corefiles.render(
        Role.CONDITIONAL_FORWARD, forwarder="10.224.0.4:53"
    )
