"""Running ``python -m lab.bench`` from a test: bounded, killed if it overruns."""

from __future__ import annotations

import json
from typing import Any

from lab.processes import run_module


async def run_bench_module(*args: str, within: float) -> dict[str, Any]:
    """The JSON the bench module prints with ``args`` (``--json`` is added); the test fails
    with the module's stderr if it exits non-zero, and the process is killed after ``within``
    seconds."""
    status, out, err = await run_module("lab.bench", *args, "--json", timeout=within)
    assert status == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out)
    return result
