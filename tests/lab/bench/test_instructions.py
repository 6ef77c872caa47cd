"""lab.bench.instructions: one run carries every job, each with its four spans exported (the
floor's call with its two)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("mode", "spans"), [("unary", 4), ("stream", 4), ("floor", 2)])
def test_a_run_exports_every_span_of_each_job_and_fails_none(mode: str, spans: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BUNNY_", "RELAY_"))}
    done = subprocess.run(
        [sys.executable, "-m", "lab.bench.instructions", "--run", "--mode", mode, "--jobs", "40"],
        capture_output=True,
        text=True,
        env={**env, "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{mode}: 40 jobs, {spans}.00 spans per job" in done.stderr


def test_the_sampler_argument_and_keeping_reach_the_runs_and_nothing_else_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab.bench.instructions import _clean_env

    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    monkeypatch.setenv("RELAY_KEEP_MAX_AGE", "9")
    env = _clean_env("parentbased_traceidratio", "0.1", "0")
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert env["BUNNY_KEEP_SLOWER_THAN"] == env["RELAY_KEEP_SLOWER_THAN"] == "0"
    assert "RELAY_KEEP_MAX_AGE" not in env
    plain = _clean_env("always_off")
    assert "OTEL_TRACES_SAMPLER_ARG" not in plain
    assert "BUNNY_KEEP_SLOWER_THAN" not in plain


def test_at_a_ratio_of_nothing_no_span_is_exported_and_every_job_succeeds() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "BUNNY_", "RELAY_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.bench.instructions",
            "--run",
            "--mode",
            "stream",
            "--jobs",
            "40",
        ],
        capture_output=True,
        text=True,
        env={
            **env,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0",
            "BUNNY_KEEP_SLOWER_THAN": "3600",
        },
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "stream: 40 jobs, 0.00 spans per job" in done.stderr
