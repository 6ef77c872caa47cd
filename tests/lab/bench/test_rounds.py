"""Rounds combined (:mod:`lab.bench.rounds`), from hand-made results: no process runs.

The numbers are chosen so that a wrong combination gives another answer: the ratio of the
median jobs/s (2,600 / 3,500 = 0.74x) misses a 0.78x target that the median of the per-round
ratios (0.80x) meets, the median peak memory is below the largest, and only one round failed.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import pytest

from lab.bench.cases import CASES, RAW_UNARY, Case, Target
from lab.bench.report import RANGE_DASH, relay_targets, text_table
from lab.bench.rounds import CaseResult, CaseRounds, combine_rounds
from lab.bench.run import main
from lab.bench.writeup import hand_written_sections, markdown_document


def _case(key: str) -> Case:
    (case,) = [c for c in CASES if c.key == key]
    return case


BASELINE = _case(RAW_UNARY)
BUNNY = dataclasses.replace(_case("unary-off"), targets=(Target(0.78, RAW_UNARY),))

BASELINE_JOBS_PER_S = (3000.0, 4000.0, 3500.0)
BUNNY_JOBS_PER_S = (2400.0, 2600.0, 2900.0)
"""Per round: 0.80x, 0.65x, 0.83x of the baseline; the median 0.80x. The medians' ratio:
2,600 / 3,500 = 0.74x."""
BASELINE_CLIENT_CPU = (250.0, 200.0, 240.0)
BUNNY_CLIENT_CPU = (400.0, 380.0, 360.0)
"""Per round: 1.60x, 1.90x, 1.50x; the median 1.60x. The medians' ratio: 380 / 240 = 1.58x."""
BUNNY_SERVER_MIB = (60.0, 75.0, 62.0)
BUNNY_READY_S = (0.3, 0.5, 0.4)
BUNNY_FAILED = (0, 3, 0)


def _result(case: Case, jobs_per_s: float, **measured: Any) -> CaseResult:
    fields: dict[str, Any] = {
        "jobs": int(jobs_per_s * 6),
        "failed": 0,
        "jobs_per_s": jobs_per_s,
        "p50_ms": 20.0,
        "p99_ms": 30.0,
        "client_cpu_us": 250.0,
        "server_cpu_us": 300.0,
        "client_peak_mb": 50.0,
        "server_peak_mb": 42.0,
    }
    fields.update(measured)
    return CaseResult(case=case, **fields)


def _rounds() -> list[list[CaseResult]]:
    return [
        [
            _result(BASELINE, BASELINE_JOBS_PER_S[n], client_cpu_us=BASELINE_CLIENT_CPU[n]),
            _result(
                BUNNY,
                BUNNY_JOBS_PER_S[n],
                client_cpu_us=BUNNY_CLIENT_CPU[n],
                server_peak_mb=BUNNY_SERVER_MIB[n],
                server_ready_s=BUNNY_READY_S[n],
                failed=BUNNY_FAILED[n],
                errors={"UNAVAILABLE": BUNNY_FAILED[n]} if BUNNY_FAILED[n] else {},
                p50_ms=(25.0, 40.0, 30.0)[n],
            ),
        ]
        for n in range(3)
    ]


def _combined() -> tuple[CaseRounds, CaseRounds]:
    baseline, bunny = combine_rounds(_rounds())
    return baseline, bunny


def test_the_ratio_is_the_median_of_the_per_round_ratios_with_their_range() -> None:
    baseline, bunny = _combined()

    per_round = [b / a for a, b in zip(BASELINE_JOBS_PER_S, BUNNY_JOBS_PER_S, strict=True)]
    assert bunny.jobs_ratios == pytest.approx(per_round)
    spread = bunny.jobs_ratio
    assert spread is not None
    assert (spread.median, spread.low, spread.high) == pytest.approx((0.8, 0.65, 2900 / 3500))
    assert spread.count == 3
    # The data tells the two apart: the ratio of the medians is another number.
    ratio_of_medians = statistics.median(BUNNY_JOBS_PER_S) / statistics.median(BASELINE_JOBS_PER_S)
    assert ratio_of_medians == pytest.approx(0.743, abs=1e-3)
    assert bunny.client_cpu_ratio is not None
    assert bunny.client_cpu_ratio.median == pytest.approx(1.6)
    # A baseline has no ratio of its own.
    assert baseline.jobs_ratio is None
    assert baseline.jobs_ratios == (None, None, None)


def test_the_target_is_judged_on_the_median_per_round_ratio() -> None:
    _, bunny = _combined()

    (verdict,) = bunny.verdicts
    assert verdict.measured is not None
    assert verdict.measured.median == pytest.approx(0.8)
    assert verdict.met is True  # the ratio of the medians, 0.74x, would miss 0.78x
    row = _row(text_table(_combined()), BUNNY)
    assert f"0.80x (0.65{RANGE_DASH}0.83) met" in row
    assert f"2,600 (0.80x, 0.65{RANGE_DASH}0.83)" in row


def test_figures_are_medians_but_failures_add_up_and_memory_is_the_largest() -> None:
    _, bunny = _combined()
    combined = bunny.combined

    assert combined.jobs_per_s == statistics.median(BUNNY_JOBS_PER_S)
    assert combined.p50_ms == 30.0
    assert combined.server_peak_mb == max(BUNNY_SERVER_MIB)
    assert combined.server_ready_s == max(BUNNY_READY_S)
    assert combined.failed == sum(BUNNY_FAILED)
    assert combined.errors == {"UNAVAILABLE": 3}
    assert combined.jobs == sum(r.jobs for r in bunny.rounds)
    by_goal = {t["goal"]: t for t in relay_targets(_combined())}
    assert by_goal["<= 1.5"]["value"] == max(BUNNY_READY_S)


def test_a_failure_in_one_round_shows_in_the_table_and_the_json() -> None:
    _, bunny = _combined()

    row = _row(text_table(_combined()), BUNNY)
    assert "  3 (round 2)  " in row
    as_json: dict[str, Any] = bunny.as_dict()
    assert as_json["failed"] == 3
    assert [r["failed"] for r in as_json["rounds"]] == list(BUNNY_FAILED)


def test_json_keeps_the_single_run_keys_and_adds_each_round() -> None:
    _, bunny = _combined()

    as_json: dict[str, Any] = bunny.as_dict()
    assert set(as_json) >= {"key", "label", "baseline", "jobs", "failed", "jobs_per_s"}
    assert as_json["jobs_per_s"] == 2600.0
    assert as_json["ratio"] == {"median": 0.8, "min": 0.65, "max": 0.829}
    (target,) = as_json["targets"]
    assert target["met"] is True
    assert target["ratio"]["median"] == 0.8
    assert [r["target_ratios"] for r in as_json["rounds"]] == [[0.8], [0.65], [0.829]]
    assert [r["round"] for r in as_json["rounds"]] == [1, 2, 3]
    assert [r["jobs_per_s"] for r in as_json["rounds"]] == list(BUNNY_JOBS_PER_S)
    assert [r["ratio"] for r in as_json["rounds"]] == [0.8, 0.65, 0.829]
    assert [r["server_peak_rss_mb"] for r in as_json["rounds"]] == list(BUNNY_SERVER_MIB)


def test_each_target_of_a_case_is_judged_and_shown_on_its_own() -> None:
    held_twice = dataclasses.replace(
        BUNNY, targets=(Target(0.78, RAW_UNARY), Target(0.9, RAW_UNARY))
    )
    rounds = [
        [dataclasses.replace(r, case=held_twice) if r.case is BUNNY else r for r in results]
        for results in _rounds()
    ]
    (_, bunny) = combine_rounds(rounds)

    assert [v.met for v in bunny.verdicts] == [True, False]
    row = _row(text_table([bunny]), held_twice)
    assert ">= 0.78x raw unary jobs/s: 0.80x (0.65\u20130.83) met; " in row
    assert row.endswith(">= 0.9x raw unary jobs/s: 0.80x (0.65\u20130.83) MISSED")


def test_one_round_shows_its_ratio_without_a_range() -> None:
    cases = combine_rounds(_rounds()[:1])

    row = _row(text_table(cases), BUNNY)
    assert "2,400 (0.80x)" in row
    assert "0.80x met" in row
    assert RANGE_DASH not in text_table(cases)


def test_the_document_shows_the_median_with_its_range_and_the_verdict() -> None:
    document = markdown_document(_settings(rounds=3), _combined(), dns=None)

    assert f"| 0.80x (0.65{RANGE_DASH}0.83), met |" in document
    assert "- Rounds: 3 " in document
    assert "**Rounds.**" in document


def test_rounds_must_be_at_least_one() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--rounds", "0"])
    assert exit_info.value.code == 2


def _row(table: str, case: Case) -> str:
    (row,) = [line for line in table.splitlines() if line.startswith(case.label + "  ")]
    return row


def _settings(*, rounds: int) -> dict[str, Any]:
    return {
        "started_at": "2026-01-01T00:00:00+00:00",
        "wall_s": 1.0,
        "quick": False,
        "rounds": rounds,
        "duration_s": 6.0,
        "warmup_s": 1.0,
        "concurrency": 64,
        "payload_bytes": 100,
        "machine": {
            "cores": 2,
            "cpu_model": "test",
            "kernel": "test",
            "python": "3.11",
            "packages": {"grpcio": "test"},
        },
        "ghz": "test",
        "load_average_before": [0.0, 0.0, 0.0],
        "load_average_after": [0.0, 0.0, 0.0],
        "relay": "relay serve",
        "bunny": "bunny bench",
    }


def test_sections_written_by_hand_are_kept_and_nothing_else() -> None:
    fleet = "<!-- fleet: begin. By hand. -->\n## Scale\n\nfigures\n<!-- fleet: end -->"
    old = f"# Benchmarks\n\nold generated text\n\n{fleet}\n\ntrailing junk\n"

    assert hand_written_sections(old) == fleet + "\n"
    assert hand_written_sections("# Benchmarks\n<!-- fleet: begin -->\nno end\n") == ""
