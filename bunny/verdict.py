"""What each hop and relay said to ``bunny diagnose``, and the verdict: which hop broke, in words.

The verdict reads the hops the way an operator would:

- REFUSED at a hop: an ACL there rejects this client.
- NXDOMAIN from every hop: the record is missing from the zone.
- NXDOMAIN from the hops nearest the pod while a hop further out answers: the
  innermost of those lacks the conditional forward for the zone (at the cluster DNS:
  neither the coredns-custom block nor a linked forwarding ruleset's rule; further out:
  the forwarder's ruleset rule).
- No answer (timeout) or SERVFAIL at a hop while the next hop out answers:
  that hop cannot reach its upstream: between two clouds, the tunnel or its
  routes; SERVFAIL means the upstream of that hop failed.
- No answer from a hop and every hop beyond it: many forwarders drop a query
  their upstream leaves unanswered, so a hop that is silent for the name is
  asked something it answers itself (:mod:`bunny.dns.liveness`). The verdict names
  the first hop, from the pod outward, that is up but whose upstream is silent,
  or the first hop that answers nothing at all: down, or unreachable from here.
- SERVFAIL from every hop asked: the furthest one's upstream failed (between two
  clouds, the tunnel or the resolver beyond it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NO_ANSWER = frozenset({"TIMEOUT", "UNREACHABLE"})


@dataclass(slots=True)
class HopReport:
    label: str
    server: str
    rcode: str
    answers: list[str]
    ttl: int | None
    latency_ms: float
    ok: bool
    error: str | None
    alive: bool | None = None
    """For a hop silent for the name: whether it answers a question of its own."""
    alive_evidence: str | None = None
    """What it answered, or what it left unanswered."""


def _up(hop: HopReport) -> bool | None:
    """Whether ``hop`` is up: it answered the name with any rcode, or a question of its own."""
    return True if hop.rcode not in NO_ANSWER else hop.alive


@dataclass(slots=True)
class SearchReport:
    """What resolving through resolv.conf costs: candidates tried, queries sent, wasted."""

    resolv_conf: str
    ndots: int
    search: list[str]
    queries_sent: int
    wasted_queries: int
    answered_by: str | None
    addresses: list[str]
    recommendation: str
    error: str | None = None
    source: str | None = None
    """Where the answer came from: ``hosts`` when the hosts file has the name (DNS is
    then not asked), else ``wire`` or a cache."""


@dataclass(slots=True)
class RelayReport:
    address: str
    connect_ok: bool
    health: str
    job_ok: bool
    relay_instance: str
    latency_ms: float
    error: str | None


@dataclass(slots=True)
class Verdict:
    ok: bool
    failed_hop: str | None
    explanation: str


@dataclass(slots=True)
class Diagnosis:
    name: str
    port: int
    trace_id: str
    hops: list[HopReport]
    search: SearchReport | None
    relay: list[RelayReport]
    verdict: Verdict
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(hops: Sequence[HopReport], relay: Sequence[RelayReport]) -> Verdict:
    """The hop that explains the failure, and why, in words (see the module docstring)."""
    failing = [i for i, hop in enumerate(hops) if not hop.ok]
    if not failing:
        if not hops:
            return Verdict(False, None, "no hops were given, so the DNS path was not checked")
        return judge_relay(relay)
    first = failing[0]
    hop = hops[first]
    if hop.rcode == "REFUSED":
        return Verdict(
            False,
            hop.label,
            f"{hop.label} ({hop.server}) answered REFUSED: an ACL there rejects this client "
            "or the zone is not served to it",
        )
    answered_further = next((i for i in range(first + 1, len(hops)) if hops[i].ok), None)
    if hop.rcode in ("NXDOMAIN", "NODATA"):
        if answered_further is not None:
            culprit = hops[answered_further - 1]
            return Verdict(
                False,
                culprit.label,
                f"{culprit.label} ({culprit.server}) says {culprit.rcode} while "
                f"{hops[answered_further].label} answers: {culprit.label} does not forward "
                f"the zone: {_missing_forward(nearest_the_pod=culprit is hops[0])}",
            )
        zone = hops[-1]
        return Verdict(
            False,
            zone.label,
            f"every hop says {hop.rcode}, down to {zone.label} ({zone.server}): "
            "the record is missing from the zone",
        )
    if answered_further is not None:
        culprit = hops[answered_further - 1]
        upstream = hops[answered_further]
        if _up(culprit) is False:
            return _down(culprit, f" while {upstream.label} answers")
        what = "no answer" if culprit.rcode in NO_ANSWER else culprit.rcode
        return Verdict(
            False,
            culprit.label,
            f"{what} from {culprit.label} ({culprit.server}) while {upstream.label} answers: "
            f"the path from {culprit.label} to {upstream.label} is broken (between clouds: "
            "the VPN tunnel or its routes)"
            + ("; SERVFAIL means the upstream of that hop failed" if what == "SERVFAIL" else "")
            + _up_because(culprit),
        )
    silent = next((i for i in failing if hops[i].rcode in NO_ANSWER), None)
    if silent is not None and all(not h.ok for h in hops[silent:]):
        return _judge_silence(hops[silent:])
    culprit = hops[failing[-1]]
    return Verdict(
        False,
        culprit.label,
        f"{culprit.rcode} from {culprit.label} ({culprit.server}), the furthest hop asked: "
        "its upstream failed (between clouds: the VPN tunnel, or a resolver beyond it)",
    )


def _judge_silence(hops: Sequence[HopReport]) -> Verdict:
    """No answer for the name from ``hops[0]`` or any hop beyond it: the first hop that is up
    while the next one is down or unreachable, or that is up and the last hop given."""
    first = hops[0]
    if _up(first) is None:
        return Verdict(
            False,
            first.label,
            f"no answer from {first.label} ({first.server}) or any hop beyond it: "
            f"{first.label} is down, or the path to it (the VPN tunnel or its routes) is cut",
        )
    if not _up(first):
        return _down(first, " or any hop beyond it")
    for hop, upstream in itertools.pairwise(hops):
        if not _up(upstream):
            return Verdict(
                False,
                hop.label,
                f"{hop.label} ({hop.server}) is up{_evidence(hop)} but its upstream is silent: "
                f"{upstream.label} ({upstream.server}) answers nothing from here either "
                f"({upstream.alive_evidence}): {upstream.label} is down, or the path from "
                f"{hop.label} to it (between clouds: the VPN tunnel or its routes) is cut",
            )
    last = hops[-1]
    return Verdict(
        False,
        last.label,
        f"{last.label} ({last.server}), the furthest hop asked, is up{_evidence(last)} but "
        "gives no answer for the name: its upstream, beyond the hops given, is silent",
    )


def _down(hop: HopReport, context: str) -> Verdict:
    return Verdict(
        False,
        hop.label,
        f"no answer from {hop.label} ({hop.server}){context}, not even to a question it "
        f"answers itself ({hop.alive_evidence}): {hop.label} is down, or unreachable from here",
    )


def _evidence(hop: HopReport) -> str:
    return f" (it answers {hop.alive_evidence})" if hop.alive_evidence and hop.alive else ""


def _up_because(hop: HopReport) -> str:
    return f"; {hop.label} itself is up (it answers {hop.alive_evidence})" if hop.alive else ""


def _missing_forward(*, nearest_the_pod: bool) -> str:
    """What sends the zone on from a hop, where to add it (both ways on AKS).

    The cluster DNS has two: the coredns-custom block, and its default forward to Azure
    DNS, which applies a DNS forwarding ruleset's rule when the ruleset is linked to the
    cluster's VNet. NXDOMAIN there means neither is in place. Further out, a DNS Private
    Resolver forwards the zone only by that ruleset rule.
    """
    if nearest_the_pod:
        return (
            "its conditional forward is missing: neither the coredns-custom block (key "
            "private-aws-internal.server in kube-system/coredns-custom) nor a DNS forwarding "
            "ruleset rule for the zone, on a ruleset linked to the cluster's VNet, sends it on; "
            "add either"
        )
    return (
        "its conditional forward is missing: on an Azure DNS Private Resolver, the DNS "
        "forwarding ruleset's rule for the zone (the ruleset linked to the resolver's VNet), "
        "which the coredns-custom block only leads to; on a forwarder VM, its own forward"
    )


def judge_relay(relay: Sequence[RelayReport]) -> Verdict:
    if not relay:
        return Verdict(False, "relay", "every hop answered, but with no address to dial")
    broken = [r for r in relay if not (r.connect_ok and r.job_ok)]
    if not broken:
        addresses = ", ".join(r.address for r in relay)
        return Verdict(True, None, f"every hop answers and relay runs jobs at {addresses}")
    details = "; ".join(f"{r.address}: {r.error}" for r in broken)
    return Verdict(False, "relay", f"DNS is fine but relay fails at {details}")
