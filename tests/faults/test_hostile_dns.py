"""The real bunny command against a hostile DNS server: a typed error, in bounded time."""

from __future__ import annotations

import json
import time

import pytest

from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME

# bunny's defaults with --nameserver and no resolv.conf: 2 s per query attempt, 2
# attempts per lookup; a lookup failure that may pass is retried with the job until its
# deadline, here capped at JOB_ATTEMPTS so that the bound is seconds, not the 30 s deadline,
# with at most 1 s of backoff between them.
JOB_ATTEMPTS = 2
DNS_BOUND_S = JOB_ATTEMPTS * (2.0 * 2) + (JOB_ATTEMPTS - 1) * 1.0
STARTUP_SLACK_S = 8.0


@pytest.mark.parametrize(
    ("mode", "error_type"),
    [("garbage", "DnsBadAnswer"), ("pointer-loop", "DnsBadAnswer"), ("empty", "DnsTimeout")],
)
async def test_bunny_submit_reports_a_hostile_dns_answer_as_a_typed_error_and_exits(
    zone: ZoneServer, mode: str, error_type: str
) -> None:
    zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    zone.answer_hostile(mode)
    started = time.monotonic()
    code, out, _ = await run_bunny(
        "submit",
        *("--target", f"{RELAY_NAME}:50051", "--nameserver", str(zone.address)),
        *("--family", "ipv4", "--json", "--count", "3", "--attempts", str(JOB_ATTEMPTS)),
        timeout=60,
    )
    elapsed = time.monotonic() - started

    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 3, "every job gets its outcome"
    assert {line["error"]["type"] for line in lines} == {error_type}
    assert all(str(zone.address) in line["error"]["message"] for line in lines)
    assert elapsed < DNS_BOUND_S + STARTUP_SLACK_S, f"{elapsed:.1f} s"
