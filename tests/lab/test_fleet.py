"""A fleet of bunny clients costs the tunnel the same DNS queries at any job rate.

Ten clients, each with bunny's own resolver and cache and a pod's resolv.conf,
send real jobs to relay through the lab's CoreDNS chain with the conditional
forward as shipped; the AWS resolver's log counts what crossed the tunnel.
"""

from __future__ import annotations

import math

import pytest

from lab import corefiles
from lab.fleet import Phase, logged_queries, main, run_phase, start_relay
from lab.tools import COREDNS, TOXIPROXY, ToolMissingError, tool
from lab.topology import start_topology
from tests.lab.test_coredns_chain import MODE

# The cluster DNS's cache keeps an answer at least 5 s (CoreDNS's MINTTL), so a
# shorter zone TTL would not expire sooner there.
TTL = 5
WARMUP_S = 6.0
WINDOW_S = 10.0
CLIENTS = 10
FAMILIES = ("A", "AAAA")


@pytest.mark.timeout(120)
async def test_tunnel_queries_do_not_grow_with_the_job_rate() -> None:
    for name in (COREDNS, TOXIPROXY):
        try:
            tool(name)
        except ToolMissingError as error:
            pytest.fail(str(error), pytrace=False)
    async with start_topology(MODE, ttl=TTL, soa_ttl=TTL) as topology:
        # A VPN between clouds takes tens of milliseconds: pods asking again at
        # once overlap on a miss for that long.
        await topology.set_tunnel_latency(20)
        _, port = await start_relay(topology)
        results = [
            await run_phase(
                topology,
                Phase(CLIENTS, rate, trailing_dot=False, cluster_cache=True),
                relay_port=port,
                ttl=TTL,
                warmup_s=WARMUP_S,
                window_s=WINDOW_S,
            )
            for rate in (1.0, 5.0)
        ]
        logs = topology.logs()
    slow, fast = results
    for result in results:
        assert result.jobs_failed == 0, result.errors
        assert result.jobs_ok >= 0.8 * CLIENTS * result.phase.rate * WINDOW_S, result
    # The cluster DNS refreshes each name and family once per expiry, however many
    # pods ask: at most one per TTL, and one more for where the window falls.
    once_per_ttl = math.ceil(WINDOW_S / TTL) + 1
    for result in results:
        assert {key.split(" ")[0] for key in result.tunnel} == set(FAMILIES), logs
        for count in result.tunnel.values():
            assert count <= once_per_ttl, (result.phase, result.tunnel, logs)
    # Five times the jobs, not more queries across the tunnel (one expiry's worth of slack).
    assert fast.tunnel_total <= slow.tunnel_total + len(FAMILIES), (slow.tunnel, fast.tunnel)


def test_logged_queries_reads_coredns_log_lines() -> None:
    log = "\n".join(
        [
            '[INFO] 10.253.1.5:40214 - 123 "A IN relay.private.aws.internal. tcp 55 false'
            ' 65535" NOERROR qr,aa,rd 120 0.0001s',
            '[INFO] 10.253.1.5:40214 - 124 "AAAA IN Relay.Private.AWS.internal. tcp 55 false'
            ' 65535" NOERROR qr,aa,rd 140 0.0001s',
            "CoreDNS-1.14.7",
            '[INFO] 10.253.1.5:40214 - 125 "A IN relay.priv',
        ]
    )
    assert logged_queries(log) == {
        "A relay.private.aws.internal": 1,
        "AAAA relay.private.aws.internal": 1,
    }


def test_the_conditional_forward_without_its_cache_keeps_the_rest() -> None:
    shipped = corefiles.render(corefiles.Role.CONDITIONAL_FORWARD, forwarder="10.0.0.4:53")
    assert "cache" in shipped
    bare = corefiles.without_directive(shipped, "cache")
    directives = [
        line.split()[0]
        for line in bare.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert directives == ["private.aws.internal", "log", "errors", "forward", "}"]


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--clients", "0", "more than 0"),
        ("--rates", "fast", "numbers separated by commas"),
        ("--cache", "maybe", "expected some of on, off"),
    ],
)
def test_bad_flags_are_refused_with_what_was_wrong(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([flag, value])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
