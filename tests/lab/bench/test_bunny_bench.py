"""``bunny bench`` against a real relay: a one-second smoke, never a timing assertion."""

from __future__ import annotations

import json

import pytest

from lab.dnsserver import ZoneServer
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, StartRelay

FIELDS = {
    "jobs",
    "failed",
    "jobs_per_s",
    "p50_ms",
    "p99_ms",
    "cpu_s",
    "cpu_us_per_job",
    "peak_rss_mb",
    "dns_sources",
    "mode",
}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_bench_prints_one_json_object_with_jobs_and_no_failures(
    zone: ZoneServer, start_relay: StartRelay, stream: bool
) -> None:
    zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=30)
    async with start_relay(args=["--store", "memory"]) as relay:
        code, out, err = await run_bunny(
            "bench",
            "--target",
            f"{RELAY_NAME}:{relay.port}",
            "--nameserver",
            str(zone.address),
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--concurrency",
            "8",
            "--json",
            *(["--stream"] if stream else []),
            env={"OTEL_TRACES_SAMPLER": "always_off"},
        )
    assert code == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert set(result) >= FIELDS
    assert result["mode"] == ("stream" if stream else "unary")
    assert result["jobs"] > 0
    assert result["failed"] == 0
    assert result["jobs_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["peak_rss_mb"] > 0
    # The window's jobs were answered from bunny's DNS cache, not looked up one by one.
    assert result["dns_sources"].get("cache", 0) >= result["jobs"]
    assert "bunny bench: measuring for 1 s" in err


async def test_bench_without_json_prints_a_table(start_relay: StartRelay) -> None:
    async with start_relay(args=["--store", "memory"]) as relay:
        code, out, err = await run_bunny(
            "bench",
            "--target",
            f"127.0.0.1:{relay.port}",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--concurrency",
            "4",
            env={"OTEL_TRACES_SAMPLER": "always_off"},
        )
    assert code == 0, err
    labels = [line.split("  ")[0] for line in out.splitlines()]
    for label in ("jobs", "jobs/s", "latency p50", "latency p99", "bunny CPU", "bunny peak RSS"):
        assert label in labels


async def test_bench_needs_a_target() -> None:
    code, _, err = await run_bunny("bench", "--duration", "1")
    assert code == 2
    assert "--target" in err
