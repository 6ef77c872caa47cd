"""``echo``: the payload back, unchanged."""

from __future__ import annotations

from relay.kinds.handler import JobInput, kind


@kind("echo")
async def echo(job: JobInput) -> bytes:
    """Return the payload unchanged."""
    return job.payload
