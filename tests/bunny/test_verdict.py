"""The verdict reads what the hops and relay said as an operator would: which hop broke, and why."""

from __future__ import annotations

import pytest

from bunny.verdict import HopReport, RelayReport, judge

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
