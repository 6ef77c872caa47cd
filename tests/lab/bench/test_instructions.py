"""lab.bench.instructions: one run carries every job, each with its four spans exported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_a_run_exports_four_spans_per_job_and_fails_none(mode: str) -> None:
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
    assert f"{mode}: 40 jobs, 4.00 spans per job" in done.stderr
