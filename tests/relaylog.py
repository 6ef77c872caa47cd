"""relay's JSON log read from outside, as an operator's log pipeline would read it.

The fault tests and the pair's tests count effects (``job.executed``) and wait for events
here rather than asking relay, so that what they check is what relay wrote down.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


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
