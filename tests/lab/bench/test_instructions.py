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
