"""``make bench``'s module in ``--quick`` mode: every case runs and the table has its ratios.

A smoke run of half a second a case: the numbers mean nothing and nothing here
checks them, only that each case produced one and that the table and the written
document have their shape. A second, smaller run goes through two rounds of two raw cases.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path
from typing import Any

import pytest

from lab.bench.cases import CASES, RAW_STREAM, RAW_UNARY
from lab.bench.report import RANGE_DASH
from tests.lab.bench.harness import run_bench_module

RATIO = re.compile(r"\(\d+\.\d\dx\)")


async def _quick_run(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    written = tmp_path / "benchmarks.md"
    return await run_bench_module("--quick", "--write", str(written), within=280), written


@pytest.mark.timeout(300)
async def test_quick_bench_runs_every_case_and_prints_ratios(tmp_path: Path) -> None:
    result, written = await _quick_run(tmp_path)

    assert result["settings"]["rounds"] == 1
    measured = {case["key"]: case for case in result["cases"]}
    assert set(measured) == {case.key for case in CASES}
    for case in measured.values():
        assert case["jobs"] > 0, case
        assert case["failed"] == 0, case
        assert case["server_cpu_us_per_job"] is not None, case

    # The floor carries the conventions' telemetry: at 100 % every call's CLIENT and
    # SERVER span reaches the receiver (warm-up included), and none with tracing off.
    assert measured["floor-unary-100"]["spans_per_job"] == pytest.approx(2.0, abs=0.05)
    assert measured["floor-unary-off"]["spans_per_job"] == 0
    # So does the peer's, over either OTLP protocol; bunny's over http/protobuf too.
    assert measured["peer-unary-100"]["spans_per_job"] == pytest.approx(2.0, abs=0.05)
    assert measured["peer-unary-100-http"]["spans_per_job"] == pytest.approx(2.0, abs=0.05)
    assert measured["unary-100-http"]["spans_per_job"] >= 3.9

    table = result["table"].splitlines()
    header, rows = table[0], table[1:]
    assert "jobs/s (x base)" in header
    assert header.endswith("  target")
    for case in CASES:
        (row,) = [line for line in rows if line.startswith(case.label + " ")]
        # Every case but the first baseline is a ratio against its baseline.
        assert bool(RATIO.search(row)) == bool(case.baseline), row

    assert result["settings"]["machine"]["cores"] > 0
    assert len(result["settings"]["load_average_before"]) == 3
    dns_methods = {row["method"] for row in result["dns"]["rows"]}
    assert any(m.startswith("bunny cached()") for m in dns_methods)
    assert {"aiodns query_dns (bare)", "dnspython async resolve"} <= dns_methods

    # The pieces of a job's path, each timed alone: every probe ran, in each setting.
    costs = result["costs"]
    assert set(costs) == {"sdk", "off", "all", "unsampled", "kept"}
    for group in ("off", "all", "unsampled", "kept"):
        assert set(costs[group]) >= {
            "bunny_job",
            "floor_client_job",
            "raw_client_job",
            "relay_job",
            "floor_server_job",
            "raw_server_job",
        }
        # bunny and relay do more per job than a bare stub and a bare servicer, and so
        # does the floor, with its telemetry.
        assert costs[group]["bunny_job"] > costs[group]["raw_client_job"]
        assert costs[group]["relay_job"] > costs[group]["raw_server_job"]
        assert costs[group]["floor_client_job"] > costs[group]["raw_client_job"]
        assert costs[group]["floor_server_job"] > costs[group]["raw_server_job"]
    assert all(value > 0 for value in costs["sdk"].values())
    assert costs["sdk"]["tally_add"] < costs["sdk"]["counter_add"]
    assert costs["sdk"]["hot_histogram_record"] < costs["sdk"]["histogram_record"]

    document = written.read_text()
    assert "## Where the time goes" in document
    assert "## Results" in document
    assert "## Method" in document
    assert "quick smoke run" in document
    assert "**The floor.**" in document
    # What keeping costs a job that went well is its own row, against keeping off.
    assert "| bunny: one unary job, gRPC taken out | unsampled, keeping on |" in document
    assert "over keeping off" in document
    for case in CASES:
        assert f"| {case.label} |" in document


@pytest.mark.timeout(90)
async def test_two_rounds_take_each_ratio_against_the_same_rounds_baseline() -> None:
    result = await run_bench_module(
        "--quick",
        "--rounds",
        "2",
        "--cases",
        f"{RAW_UNARY},{RAW_STREAM}",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--no-dns",
        "--no-costs",
        within=75,
    )

    assert result["settings"]["rounds"] == 2
    baseline, stream = result["cases"]
    assert (baseline["key"], stream["key"]) == (RAW_UNARY, RAW_STREAM)
    for case in (baseline, stream):
        assert [r["round"] for r in case["rounds"]] == [1, 2]
        assert all(r["jobs"] > 0 and r["failed"] == 0 for r in case["rounds"])
    per_round = [
        s["jobs_per_s"] / b["jobs_per_s"]
        for b, s in zip(baseline["rounds"], stream["rounds"], strict=True)
    ]
    assert [r["ratio"] for r in stream["rounds"]] == pytest.approx(per_round, abs=2e-3)
    assert stream["ratio"]["median"] == pytest.approx(statistics.median(per_round), abs=2e-3)
    assert stream["ratio"]["min"] == pytest.approx(min(per_round), abs=2e-3)
    (row,) = [
        line for line in result["table"].splitlines() if line.startswith("raw grpc.aio stream")
    ]
    assert re.search(rf"\(\d+\.\d\dx, \d+\.\d\d{RANGE_DASH}\d+\.\d\d\)", row), row
