"""Running ``python -m bunnyrelay.lab.bench`` from a test: bounded, killed if it overruns."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bunnyrelay.lab.bench.children import child_env


async def run_bench_module(*args: str, within: float) -> dict[str, Any]:
    """The JSON the bench module prints with ``args`` (``--json`` is added); the test fails
    with the module's stderr if it exits non-zero, and the process is killed after ``within``
    seconds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bunnyrelay.lab.bench",
        *args,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        async with asyncio.timeout(within):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result
