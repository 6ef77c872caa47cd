"""A closed-loop load generator: N jobs in flight, each replaced the moment it finishes.

``bunny bench`` drives bunny's runners with it, and the benchmark's raw grpc.aio
baseline (:mod:`lab.bench.rawecho`) drives a bare stub with the very
same loop, so both sides are measured alike. It imports nothing but the
standard library on purpose: the baseline's peak memory must not include
bunny's imports.

A run is a warm-up (connections, caches and the allocator settle; nothing is
counted) and then the measured window. A job counts when it *finishes* inside
the window; the CPU time is the process's own (every thread, gRPC's included)
over exactly that window. Progress goes to ``progress`` once a second, and two
lines mark the window for a parent that samples another process's CPU::

    NAME: measuring for 10 s
    NAME: measured 23456 jobs in 10.00 s
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

MEASURING = "measuring for"
"""The progress line that opens the measured window contains this."""
MEASURED = "measured"
"""…and the one that closes it starts with ``NAME: measured``."""

Job = Callable[[], Awaitable[str | None]]
"""Runs one job; returns None when it succeeded, else a short name for why it failed."""


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """How long and how hard to push."""

    duration_s: float
    """Length of the measured window, in seconds."""
    concurrency: int
    """Jobs in flight at every moment (closed loop: one finishes, the next starts)."""
    warmup_s: float = 1.0
    """Seconds of load before the window opens; nothing from them is counted."""
    progress_every_s: float = 1.0
    """Seconds between progress lines."""

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError(f"the duration must be more than 0 seconds, not {self.duration_s}")
        if self.concurrency < 1:
            raise ValueError(f"the concurrency must be at least 1, not {self.concurrency}")
        if not (self.warmup_s >= 0 and math.isfinite(self.warmup_s)):
            raise ValueError(f"the warm-up must be at least 0 seconds, not {self.warmup_s}")
        if not self.progress_every_s > 0:
            raise ValueError("progress_every_s must be more than 0")


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one run measured (all counts are of the measured window unless named warm-up)."""

    jobs: int
    """Jobs that finished inside the window, succeeded or not."""
    failed: int
    """Of those, the ones that failed."""
    elapsed_s: float
    """The window's real length."""
    latencies_ms: list[float] = field(repr=False)
    """Each successful job's latency, in milliseconds, in completion order."""
    cpu_user_s: float
    cpu_system_s: float
    peak_rss_mb: float
    """The process's peak resident set size so far (VmHWM), in MiB."""
    concurrency: int
    warmup_jobs: int
    warmup_failed: int
    all_jobs: int
    """Every job that finished: warm-up, window, and those in flight when the window closed
    (for a server-side count, such as spans or DNS queries, per job)."""
    errors: dict[str, int]
    """Why jobs failed (warm-up included), by the name the job gave."""

    @property
    def succeeded(self) -> int:
        return self.jobs - self.failed

    @property
    def jobs_per_s(self) -> float:
        """Successful jobs per second of the window."""
        return self.succeeded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_system_s

    @property
    def cpu_us_per_job(self) -> float | None:
        return self.cpu_s / self.succeeded * 1e6 if self.succeeded else None

    def percentile_ms(self, p: float) -> float | None:
        return percentile(sorted(self.latencies_ms), p)

    def as_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies_ms)
        mean = sum(ordered) / len(ordered) if ordered else None
        per_job = self.cpu_us_per_job
        return {
            "jobs": self.jobs,
            "failed": self.failed,
            "jobs_per_s": round(self.jobs_per_s, 1),
            "p50_ms": _rounded(percentile(ordered, 50)),
            "p90_ms": _rounded(percentile(ordered, 90)),
            "p99_ms": _rounded(percentile(ordered, 99)),
            "max_ms": _rounded(ordered[-1] if ordered else None),
            "mean_ms": _rounded(mean),
            "elapsed_s": round(self.elapsed_s, 3),
            "concurrency": self.concurrency,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_user_s": round(self.cpu_user_s, 3),
            "cpu_system_s": round(self.cpu_system_s, 3),
            "cpu_us_per_job": None if per_job is None else round(per_job, 1),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "warmup_jobs": self.warmup_jobs,
            "warmup_failed": self.warmup_failed,
            "all_jobs": self.all_jobs,
            "errors": dict(self.errors),
        }


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of an already sorted list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB: ``VmHWM``, the peak of its own memory.

    Not ``ru_maxrss``: Linux carries the peak of the memory a process had before ``exec``
    into it, so a client started by a large parent (``make bench``'s own process) reported
    the parent's peak. ``ru_maxrss`` (in KiB) only where there is no /proc.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(slots=True)
class _Counts:
    counting: bool = False
    stopping: bool = False
    jobs: int = 0
    failed: int = 0
    warmup_jobs: int = 0
    warmup_failed: int = 0
    all_jobs: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def drive(
    job: Job, settings: LoadSettings, *, name: str, progress: TextIO | None = None
) -> LoadResult:
    """Keep ``settings.concurrency`` calls of ``job`` in flight through warm-up and window.

    ``job`` must not raise for a failed job (it returns why); an exception from it
    ends the run and is raised here. Jobs still in flight when the window closes
    are awaited but not counted.
    """
    tally = _Counts()
    clock = time.perf_counter

    async def worker() -> None:
        while not tally.stopping:
            started = clock()
            error = await job()
            finished = clock()
            tally.all_jobs += 1
            if tally.stopping:
                return
            if tally.counting:
                tally.jobs += 1
                if error is None:
                    tally.latencies_ms.append((finished - started) * 1000.0)
                else:
                    tally.failed += 1
            else:
                tally.warmup_jobs += 1
                if error is not None:
                    tally.warmup_failed += 1
            if error is not None:
                tally.errors[error] += 1

    def say(text: str) -> None:
        if progress is not None:
            print(f"{name}: {text}", file=progress, flush=True)

    workers = [asyncio.create_task(worker()) for _ in range(settings.concurrency)]
    try:
        if settings.warmup_s > 0:
            say(f"warming up for {settings.warmup_s:g} s with {settings.concurrency} in flight")
            await _watch(workers, settings.warmup_s)
        before = os.times()
        opened = clock()
        tally.counting = True
        say(f"{MEASURING} {settings.duration_s:g} s")
        closes = opened + settings.duration_s
        while (left := closes - clock()) > 0:
            await _watch(workers, min(settings.progress_every_s, left))
            so_far = clock() - opened
            say(
                f"{min(so_far, settings.duration_s):5.1f}/{settings.duration_s:g} s  "
                f"{tally.jobs} jobs  {(tally.jobs - tally.failed) / so_far:,.0f} jobs/s  "
                f"{tally.failed} failed"
            )
        tally.stopping = True
        closed = clock()
        after = os.times()
        say(f"{MEASURED} {tally.jobs} jobs in {closed - opened:.2f} s")
        await asyncio.gather(*workers)
    finally:
        tally.stopping = True
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return LoadResult(
        jobs=tally.jobs,
        failed=tally.failed,
        elapsed_s=closed - opened,
        latencies_ms=tally.latencies_ms,
        cpu_user_s=after.user - before.user,
        cpu_system_s=after.system - before.system,
        peak_rss_mb=peak_rss_mb(),
        concurrency=settings.concurrency,
        warmup_jobs=tally.warmup_jobs,
        warmup_failed=tally.warmup_failed,
        all_jobs=tally.all_jobs,
        errors=dict(tally.errors),
    )


async def _watch(workers: list[asyncio.Task[None]], seconds: float) -> None:
    """Sleep ``seconds``, but raise at once if a worker crashed meanwhile."""
    done, _ = await asyncio.wait(workers, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            task.result()
