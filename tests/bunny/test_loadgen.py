"""The closed-loop load generator ``bunny bench`` and the raw baseline share: N jobs in flight,
a warm-up that is not counted, failures by reason, a crash that ends the run."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pytest

from bunny.loadgen import MEASURED, MEASURING, LoadSettings, drive, percentile


class Jobs:
    """Jobs that take a moment, fail when told, and count how many run at once."""

    def __init__(self, *, fail_every: int = 0, crash_at: int = 0) -> None:
        self.running = 0
        self.most = 0
        self.started = 0
        self._fail_every = fail_every
        self._crash_at = crash_at

    async def __call__(self) -> str | None:
        self.started += 1
        number = self.started
        if number == self._crash_at:
            raise RuntimeError("a bug in the job")
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.002)
        finally:
            self.running -= 1
        if self._fail_every and number % self._fail_every == 0:
            return "RelayUnavailable"
        return None


async def test_it_keeps_n_jobs_in_flight_and_counts_only_the_measured_window() -> None:
    jobs = Jobs(fail_every=5)
    progress = io.StringIO()

    result = await drive(
        jobs,
        LoadSettings(duration_s=0.3, concurrency=4, warmup_s=0.1, progress_every_s=0.1),
        name="test",
        progress=progress,
    )

    assert jobs.most == 4
    assert result.concurrency == 4
    assert result.jobs > 0
    assert result.warmup_jobs > 0
    assert result.all_jobs >= result.jobs + result.warmup_jobs
    assert result.failed > 0
    assert result.succeeded == result.jobs - result.failed == len(result.latencies_ms)
    assert result.errors["RelayUnavailable"] == result.failed + result.warmup_failed
    assert result.jobs_per_s == result.succeeded / result.elapsed_s
    lines = progress.getvalue().splitlines()
    assert any(f"test: {MEASURING} 0.3 s" == line for line in lines)
    assert lines[-1].startswith(f"test: {MEASURED} {result.jobs} jobs in ")
    assert set(result.as_dict()) >= {"jobs", "failed", "jobs_per_s", "p50_ms", "cpu_us_per_job"}


async def test_a_job_that_raises_ends_the_run_with_its_error() -> None:
    with pytest.raises(RuntimeError, match="a bug in the job"):
        await drive(
            Jobs(crash_at=3),
            LoadSettings(duration_s=5.0, concurrency=2, warmup_s=0.0),
            name="test",
        )


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert (percentile(ordered, 50), percentile(ordered, 99), percentile(ordered, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 50) is None
    assert percentile([7.0], 1) == 7.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"duration_s": 0.0, "concurrency": 1}, "duration"),
        ({"duration_s": 1.0, "concurrency": 0}, "concurrency"),
        ({"duration_s": 1.0, "concurrency": 1, "warmup_s": -1.0}, "warm-up"),
    ],
)
def test_settings_it_cannot_run_are_refused(values: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(**values)  # type: ignore[arg-type]


def test_the_peak_memory_reported_is_the_process_own_not_its_parent() -> None:
    # A parent far larger than the child: Linux carries the parent's peak into the child's
    # ru_maxrss across exec, which made every client of make bench report make bench's own.
    parent = bytearray(200 * 2**20)
    parent[::4096] = b"\x01" * len(parent[::4096])
    code = "from bunny.loadgen import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )

    assert float(child.stdout) < 150, "the child reported its parent's peak"
    assert len(parent) == 200 * 2**20
