"""Starting relay and bunny as real processes, for the demo and the tests.

Every process started here is ended by PID when its context exits, even when
the body failed, so nothing outlives the demo or a test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

_LISTENING = re.compile(rb"relay listening on (\S+):(\d+)")


@dataclass
class RelayProcess:
    process: asyncio.subprocess.Process
    host: str
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (relay drains), then wait; SIGKILL if it overstays ``timeout``."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.process.wait()
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without OTEL_, RELAY_ and BUNNY_ settings, plus ``extra``:
    a child configured by what the caller says, not by what the caller's caller set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RELAY_", "BUNNY_"))}
    env.update(extra or {})
    return env


@asynccontextmanager
async def relay_process(
    listen: str,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 15.0,
    log_path: Path | None = None,
    state_dir: Path | None = None,
) -> AsyncIterator[RelayProcess]:
    """Start ``relay serve --listen LISTEN`` and wait for its "listening" line.

    relay's log goes to ``log_path`` when given, else to this process's stderr.
    Its store is its default (SQLite) in ``state_dir``; without one, and unless
    ``args`` or ``env`` choose the store or the state directory, in a fresh
    temporary directory removed afterwards, so that relays started side by side
    never share (or lock each other out of) one file. To restart a relay with
    what it remembered, pass the same ``state_dir``.
    """
    chosen = {"--store", "--state-dir"} & {arg.split("=", 1)[0] for arg in args}
    chosen |= {"RELAY_STORE", "RELAY_STATE_DIR"} & set(env or {})
    scratch: str | None = None
    if state_dir is None and not chosen:
        scratch = tempfile.mkdtemp(prefix="relay-state-")
        state_dir = Path(scratch)
    state_args = ["--state-dir", str(state_dir)] if state_dir is not None else []
    log = log_path.open("ab") if log_path is not None else None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "serve",
        "--listen",
        listen,
        *state_args,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=child_env(env),
    )
    if log is not None:
        log.close()  # the child holds its own descriptor
    try:
        assert process.stdout is not None
        async with asyncio.timeout(ready_timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise RuntimeError(
                        f"relay --listen {listen} exited with {code} before it was ready"
                    )
                match = _LISTENING.search(line)
                if match:
                    break
        # Keep reading stdout so that a chatty relay never blocks on a full pipe.
        drain = asyncio.get_running_loop().create_task(_discard(process.stdout))
        yield RelayProcess(process, match.group(1).decode(), int(match.group(2)))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    await drain


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 120.0,
    cwd: str | None = None,
) -> tuple[int, str, str]:
    """Run ``argv`` to completion, with ``stdin`` (bytes, or nothing) on its standard input;
    return (exit status, stdout, stderr). ``env`` is the child's whole environment (None: ours).

    The child is killed if it runs past ``timeout`` (TimeoutError).
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
        cwd=cwd,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate(stdin)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def run_module(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    place: Callable[[list[str]], list[str]] | None = None,
) -> tuple[int, str, str]:
    """Run ``python -m MODULE ARGS`` to completion; return (exit status, stdout, stderr).

    The child is killed if it runs past ``timeout`` (TimeoutError). ``place`` rewrites the
    command line to run it elsewhere, e.g. inside a network namespace
    (``functools.partial(topology.argv, Side.POD)``).
    """
    argv = [sys.executable, "-m", module, *args]
    return await run_command(
        place(argv) if place is not None else argv, env=child_env(env), timeout=timeout
    )


async def run_bunny(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    place: Callable[[list[str]], list[str]] | None = None,
) -> tuple[int, str, str]:
    """Run ``bunny ARGS`` to completion (:func:`run_module`)."""
    return await run_module("bunny", *args, env=env, timeout=timeout, place=place)
