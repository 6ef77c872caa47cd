"""The benchmark's processes: servers that say when they are ready, clients that say when
they measure.

A server prints one line with where it listens (``serving``); a client prints
its result as JSON on stdout and marks its measured window on stderr
(:mod:`bunny.loadgen`'s ``measuring for`` / ``measured`` lines), which is when
:func:`run_client` reads the servers' CPU time, so a server's CPU per job covers
the same window as the client's. Every process started here is ended by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bunny.loadgen import MEASURED, MEASURING
from lab.bench.procstat import cpu_seconds
from lab.processes import child_env


@dataclass
class Server:
    process: asyncio.subprocess.Process
    ready: re.Match[str]
    """The match of the ready pattern against the line that announced it."""
    ready_s: float
    """Seconds from spawning to that line."""

    @property
    def pid(self) -> int:
        return self.process.pid


@asynccontextmanager
async def serving(
    argv: Sequence[str],
    *,
    ready: re.Pattern[str],
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> AsyncIterator[Server]:
    """Start ``argv``, wait for a stdout line matching ``ready``; SIGTERM it on the way out.

    stdin is a pipe the server may read commands from (``process.stdin``).
    """
    started = time.perf_counter()
    log = log_path.open("ab") if log_path is not None else None
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log if log is not None else asyncio.subprocess.DEVNULL,
        env=child_env(env),
    )
    if log is not None:
        log.close()
    try:
        assert process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise RuntimeError(f"{argv[:4]} exited with {code} before it was ready")
                match = ready.search(line.decode(errors="replace"))
                if match:
                    break
        yield Server(process, match, time.perf_counter() - started)
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class ClientRun:
    """A finished client process."""

    result: dict[str, Any]
    """The JSON object it printed."""
    returncode: int
    server_cpu_s: dict[int, float] = field(default_factory=dict)
    """CPU seconds each watched process used during the measured window (or, for a
    client that marks no window, during the client's whole life)."""
    windowed: bool = False
    """Whether ``server_cpu_s`` covers exactly the measured window."""
    wall_s: float = 0.0


async def run_client(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    watch: Sequence[int] = (),
    label: str,
    progress: TextIO | None = sys.stderr,
    timeout: float = 600.0,
) -> ClientRun:
    """Run a client to completion and parse its JSON; CPU of ``watch`` PIDs over its window.

    Progress lines from the client are passed on to ``progress`` with ``label``.
    Raises RuntimeError when the client prints no JSON object.
    """
    before = {pid: cpu_seconds(pid) for pid in watch}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(env),
    )
    window: dict[str, dict[int, float]] = {}
    tail: list[str] = []

    async def read_stderr(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if MEASURING in text and "open" not in window:
                window["open"] = {pid: cpu_seconds(pid) for pid in watch}
            elif f": {MEASURED} " in text and "close" not in window:
                window["close"] = {pid: cpu_seconds(pid) for pid in watch}
            tail.append(text)
            del tail[:-40]
            if progress is not None:
                print(f"  [{label}] {text}", file=progress, flush=True)

    try:
        assert process.stdout is not None
        assert process.stderr is not None
        async with asyncio.timeout(timeout):
            out, _ = await asyncio.gather(process.stdout.read(), read_stderr(process.stderr))
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    after = {pid: cpu_seconds(pid) for pid in watch}
    wall = time.perf_counter() - started
    text = out.decode(errors="replace").strip()
    result = _json_object(text)
    if not isinstance(result, dict):
        raise RuntimeError(
            f"{label}: {argv[:4]} exited with {code} and printed no JSON result:\n"
            + "\n".join(tail[-15:])
        )
    if "open" in window and "close" in window:
        cpu = {pid: window["close"][pid] - window["open"][pid] for pid in watch}
        return ClientRun(result, code, cpu, True, wall)
    cpu = {pid: after[pid] - before[pid] for pid in watch}
    return ClientRun(result, code, cpu, False, wall)


def _json_object(text: str) -> Any:
    """The whole of ``text`` as JSON, else its last line (after log lines), else None."""
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return None
