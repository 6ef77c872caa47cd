"""``bunny submit --count N`` on a terminal shows how far it has got on stderr; as a file,
a pipe or JSON it shows nothing of the kind.

bunny runs on a real pseudo-terminal, and a terminal emulator (pyte) reads what it drew:
the assertions are on the screen a person would see, not on escape codes.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass

import pyte

from lab.processes import child_env
from tests.conftest import StartRelay

COLUMNS, ROWS = 160, 40
JOBS = 100
BAR = re.compile(
    rf"^jobs .* (?P<done>\d+)/{JOBS} (?P<ok>\d+) succeeded, (?P<failed>\d+) failed "
    r"[\d,]+ jobs/s \d+:\d\d:\d\d$"
)


@dataclass(frozen=True)
class Run:
    code: int
    terminal: bytes
    """Everything written to the terminal, as the terminal got it."""
    stdout: str
    """What went to stdout when it was a pipe."""
    stderr: str
    """What went to stderr when it was a pipe."""

    def screen(self) -> list[str]:
        """The terminal's screen at the end, as a person sees it (lines right-stripped)."""
        screen = pyte.Screen(COLUMNS, ROWS)
        pyte.ByteStream(screen).feed(self.terminal)
        return [line.rstrip() for line in screen.display]


def _run(argv: list[str], *, stdout_tty: bool, stderr_tty: bool) -> Run:
    """Run ``bunny ARGV`` with stdout and/or stderr on a new pseudo-terminal."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "bunny", *argv],
        stdin=subprocess.DEVNULL,
        stdout=terminal if stdout_tty else subprocess.PIPE,
        stderr=terminal if stderr_tty else subprocess.PIPE,
        env=child_env({"TERM": "xterm-256color"}),
    )
    os.close(terminal)
    drawn = bytearray()
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every end of the terminal is closed, bunny has exited
                break
            if not chunk:
                break
            drawn += chunk
        out, err = process.communicate(timeout=60)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return Run(process.returncode, bytes(drawn), (out or b"").decode(), (err or b"").decode())


def _submit(port: int, *more: str) -> list[str]:
    # Jobs that each take a while, so the run lasts long enough to be watched.
    return [
        "submit", "--target", f"127.0.0.1:{port}", "--kind", "sleep", "--payload", "30",
        "--count", str(JOBS), "--concurrency", "4", *more,
    ]  # fmt: skip


async def test_a_long_submit_on_a_terminal_shows_its_progress_under_the_job_lines(
    start_relay: StartRelay,
) -> None:
    async with start_relay(args=["--store", "memory"]) as relay:
        run = await asyncio.to_thread(_run, _submit(relay.port), stdout_tty=True, stderr_tty=True)

    assert run.code == 0
    screen = [line for line in run.screen() if line]
    # Finished: the job lines scrolled by above one bar, the summary under it, and no
    # stale copy of the bar left between job lines.
    bars = [line for line in screen if "jobs/s" in line]
    assert len(bars) == 1, screen
    finished = BAR.match(bars[0])
    assert finished is not None, bars[0]
    assert (finished["done"], finished["ok"], finished["failed"]) == (str(JOBS), str(JOBS), "0")
    assert screen[-1] == f"bunny: {JOBS} jobs, {JOBS} succeeded, 0 failed"
    assert screen[-2] == bars[0]
    job_lines = [line for line in screen[:-2] if not line.startswith(" ")]
    assert job_lines
    assert all(re.match(r"^SUCCEEDED \S+  relay=127\.0\.0\.1:\d+ \(", line) for line in job_lines)
    # While it ran, the bar counted up.
    plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", run.terminal)
    counts = {int(n) for n in re.findall(rf"(\d+)/{JOBS} ".encode(), plain)}
    assert any(0 < n < JOBS for n in counts), sorted(counts)


async def test_job_lines_to_a_pipe_stay_there_while_the_terminal_shows_progress(
    start_relay: StartRelay,
) -> None:
    async with start_relay(args=["--store", "memory"]) as relay:
        run = await asyncio.to_thread(_run, _submit(relay.port), stdout_tty=False, stderr_tty=True)

    assert run.code == 0
    assert len([line for line in run.stdout.splitlines() if line.startswith("SUCCEEDED")]) == JOBS
    assert "jobs/s" not in run.stdout
    assert "\x1b" not in run.stdout
    screen = [line for line in run.screen() if line]
    assert BAR.match(screen[-2]), screen
    assert not any(line.startswith("SUCCEEDED") for line in screen)


async def test_no_progress_when_stderr_is_not_a_terminal_or_the_output_is_json(
    start_relay: StartRelay,
) -> None:
    async with start_relay(args=["--store", "memory"]) as relay:
        piped = await asyncio.to_thread(
            _run, _submit(relay.port), stdout_tty=True, stderr_tty=False
        )
        as_json = await asyncio.to_thread(
            _run, _submit(relay.port, "--json"), stdout_tty=True, stderr_tty=True
        )

    assert piped.code == 0
    assert piped.stderr == f"bunny: {JOBS} jobs, {JOBS} succeeded, 0 failed\n"
    assert b"jobs/s" not in piped.terminal
    assert as_json.code == 0
    assert b"jobs/s" not in as_json.terminal
    lines = as_json.terminal.decode().replace("\r\n", "\n").splitlines()
    assert lines[-1] == f"bunny: {JOBS} jobs, {JOBS} succeeded, 0 failed"
    assert [json.loads(line)["status"] for line in lines[:-1]] == ["SUCCEEDED"] * JOBS
