"""Shared by the fault tests: relay's JSON log read from outside, and hypothesis's settings.

Hypothesis runs a bounded number of examples, derandomized so that CI and a
developer see the same ones (``HYPOTHESIS_PROFILE=dev`` explores further).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches in .hypothesis/ under the working directory; not in the work tree.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "bunnyrelay-hypothesis"))

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    database=None,  # nothing written into the work tree
    deadline=timedelta(seconds=5),
    # One relay serves every example of a test, which is the point, not an accident.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    parent=settings.get_profile("ci"),
    max_examples=500,
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON lines of relay's log at ``path`` whose ``event`` is ``event``."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by SIGKILL
        if record.get("event") == event:
            found.append(record)
    return found


def executions(path: Path) -> list[str]:
    """Job ids relay executed, one per ``job.executed`` line: effects counted from outside."""
    return [str(record["job_id"]) for record in log_events(path, "job.executed")]


async def wait_for_event(
    path: Path, event: str, *, job_id: str | None = None, within: float = 15.0
) -> dict[str, Any]:
    """Poll relay's log until a line with ``event`` (and ``job_id``) is there."""
    async with asyncio.timeout(within):
        while True:
            for record in log_events(path, event):
                if job_id is None or record.get("job_id") == job_id:
                    return record
            await asyncio.sleep(0.05)
