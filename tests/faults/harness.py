"""What the fault tests share: relays that are killed and come back, ``bunny submit`` run as
a user runs it, and effects counted from relay's JSON log (``job.executed``), from outside.

One ``job.executed`` line per handler run, flushed before its result is stored, so an
effect is never missed even across SIGKILL. A job that was running when relay died may
run once more, and relay says so (``job.reclaimed``); any other second run is a
duplicate effect.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.dnsserver import ZoneServer
from lab.processes import RelayProcess, relay_process, run_bunny
from tests.conftest import RELAY_NAME
from tests.faults.faultproxy import FaultProxy, WireFault, rebindable_port
from tests.relaylog import executions, log_events

JSON_LOGS = ("--log-format", "json", "--log-executions")


# --- relay processes that are killed and come back -------------------------------------------


@dataclass
class KillableRelay:
    """One relay address whose process is SIGKILLed, SIGTERMed and started again on it,
    with the same store and the same log file."""

    host: str
    log: Path
    args: Sequence[str]
    state_dir: Path | None = None
    port: int = 0
    kills: int = 0
    process: RelayProcess | None = None
    _stack: AsyncExitStack | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = rebindable_port(self.host)

    async def start(self) -> None:
        stack = AsyncExitStack()
        self.process = await stack.enter_async_context(
            relay_process(
                f"{self.host}:{self.port}",
                args=self.args,
                log_path=self.log,
                state_dir=self.state_dir,
            )
        )
        self._stack = stack
        self.port = self.process.port

    async def kill(self) -> None:
        """SIGKILL: no drain, no flush; only what relay wrote before counts."""
        assert self.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        await self.close()
        self.kills += 1

    async def terminate(self, within: float) -> tuple[int, float]:
        """SIGTERM (relay drains); its exit status and how long it took."""
        assert self.process is not None
        started = time.monotonic()
        code = await self.process.terminate(timeout=within)
        took = time.monotonic() - started
        await self.close()
        return code, took

    async def close(self) -> None:
        """End the process (by its PID, if it still runs) and forget it."""
        stack, self._stack, self.process = self._stack, None, None
        if stack is not None:
            await stack.aclose()


# --- bunny and what it printed -----------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    code: int
    outcomes: list[dict[str, Any]]
    stderr: str
    seconds: float

    def by_id(self) -> Counter[str]:
        return Counter(str(line["job_id"]) for line in self.outcomes)

    @property
    def retries(self) -> int:
        return sum(int(line["attempts"]) - 1 for line in self.outcomes)

    @property
    def max_attempts(self) -> int:
        return max((int(line["attempts"]) for line in self.outcomes), default=0)

    def failures(self, limit: int = 5) -> list[str]:
        """The first failed jobs, in a line each: what bunny said and after how many attempts."""
        return [
            f"{line['job_id']} after {line['attempts']} attempts, {line['duration_ms']:.0f} ms: "
            f"{(line['error'] or {}).get('type')}: {(line['error'] or {}).get('message')}"
            for line in self.outcomes
            if line["status"] != "SUCCEEDED"
        ][:limit]


async def submit(zone: ZoneServer, port: int, *args: str, within: float = 150.0) -> Batch:
    """``bunny submit`` to relay's DNS name on ``port``, asking ``zone``; one JSON line per job."""
    started = time.monotonic()
    code, out, err = await run_bunny(
        "submit",
        *("--target", f"{RELAY_NAME}:{port}", "--nameserver", f"127.0.0.1:{zone.port}"),
        "--json",
        *args,
        timeout=within,
    )
    outcomes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return Batch(code, outcomes, err, time.monotonic() - started)


def job_ids(base: str, count: int) -> list[str]:
    """The ids ``bunny submit --job-id BASE --count COUNT`` gives its jobs."""
    return [f"{base}-{n}" for n in range(1, count + 1)]


# --- effects, from relay's logs ----------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    runs: Counter[str]
    """Handler runs per job id (``job.executed``)."""
    reclaimed: Counter[str]
    """Runs relay started again because the process that held the job died (``job.reclaimed``)."""

    @classmethod
    def read(cls, logs: Iterable[Path]) -> Effects:
        runs: Counter[str] = Counter()
        reclaimed: Counter[str] = Counter()
        for log in logs:
            runs.update(executions(log))
            reclaimed.update(str(r["job_id"]) for r in log_events(log, "job.reclaimed"))
        return cls(runs, reclaimed)

    @property
    def total(self) -> int:
        return sum(self.runs.values())

    @property
    def reruns_after_kill(self) -> int:
        """Second runs of jobs that were running when relay died: allowed, once per crash."""
        return sum(min(n - 1, self.reclaimed[j]) for j, n in self.runs.items())

    @property
    def duplicates(self) -> int:
        """Runs beyond the first that no crash explains: must be 0."""
        return sum(max(0, n - 1 - self.reclaimed[j]) for j, n in self.runs.items())

    def describe(self) -> str:
        return (
            f"{self.total} executions of {len(self.runs)} job ids; "
            f"{sum(self.reclaimed.values())} jobs were running when their relay died and "
            f"ran again (job.reclaimed), {self.reruns_after_kill} of them after their first run "
            f"had finished (allowed: once per crash); {self.duplicates} duplicate effects"
        )


def check_results(batch: Batch, expected: Sequence[str]) -> tuple[int, int, int, list[str]]:
    """(results, lost, duplicate results, failures) of ``batch`` against the ids it was given."""
    seen = batch.by_id()
    lost = sum(1 for job_id in expected if job_id not in seen)
    duplicate = sum(n - 1 for n in seen.values())
    return len(batch.outcomes), lost, duplicate, batch.failures()


def report(capsys: pytest.CaptureFixture[str], title: str, rows: Iterable[str]) -> None:
    """Print the test's numbers where `make test` shows them, whatever the capture mode."""
    with capsys.disabled():
        print(f"\n{title}")
        for row in rows:
            print(f"  {row}")


# --- a schedule of faults, each started once the batch has got far enough ----------------------


@dataclass
class Step:
    after_runs: int
    """Start once relay's log shows this many executions (so the fault hits a running batch)."""
    name: str
    action: Callable[[], Awaitable[object]]


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    rows: list[str] = field(default_factory=list)

    def note(self, text: str, runs: int) -> None:
        self.rows.append(f"{time.monotonic() - self.started:6.1f} s  {runs:6d} runs  {text}")


class ExecutionCount:
    """``job.executed`` lines in relay's logs so far, read on from where the last call stopped
    (polled every 0.1 s while a batch runs, so it must not re-parse thousands of lines)."""

    _MARK = b'"event": "job.executed"'

    def __init__(self, logs: Sequence[Path]) -> None:
        self._offsets = dict.fromkeys(logs, 0)
        self._count = 0

    def __call__(self) -> int:
        for log, offset in self._offsets.items():
            if not log.exists():
                continue
            with log.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
            complete = chunk.rfind(b"\n") + 1  # a line still being written waits
            self._count += chunk[:complete].count(self._MARK)
            self._offsets[log] = offset + complete
        return self._count


async def until_runs(
    runs: ExecutionCount,
    count: int,
    batches: Sequence[asyncio.Task[Batch]],
    *,
    within: float = 60,
) -> float:
    """Wait until relay's logs show ``count`` executions in all; the moment they did.

    Raises, with what bunny printed, if every batch ends first.
    """
    async with asyncio.timeout(within):
        while runs() < count:
            if all(batch.done() for batch in batches):
                said = "\n".join(batch.result().stderr[-2000:] for batch in batches)
                raise AssertionError(f"the batches ended before relay ran {count} jobs:\n{said}")
            await asyncio.sleep(0.02)
    return time.monotonic()


async def run_schedule(
    steps: Sequence[Step], logs: Sequence[Path], batches: Sequence[asyncio.Task[Batch]]
) -> Timeline:
    """Each step once the executions reach its mark; raises if the batches end first."""
    timeline = Timeline()
    runs = ExecutionCount(logs)
    for step in steps:
        await until_runs(runs, step.after_runs, batches, within=120)
        timeline.note(f"{step.name} ...", runs())
        await step.action()
        timeline.note(f"... {step.name} over", runs())
    assert not all(batch.done() for batch in batches), "the faults must hit a running batch"
    return timeline


def hold(proxy: FaultProxy, fault: WireFault, seconds: float) -> Step:
    return Step(0, f"{fault.name} for {seconds:g} s", lambda: proxy.hold(fault, seconds))


def kill_and_restart(relay: KillableRelay) -> Step:
    async def action() -> None:
        await relay.kill()
        await relay.start()

    return Step(0, "SIGKILL relay, restart it on the same store", action)


def at(after_runs: int, step: Step) -> Step:
    step.after_runs = after_runs
    return step
