"""``fail``: a job that always fails, for trying what a client does with a failed job."""

from __future__ import annotations

from relay.kinds.handler import JobFailed, JobInput, kind


@kind("fail")
async def fail(job: JobInput) -> bytes:
    """Always fail, with the payload as the message."""
    raise JobFailed(job.payload.decode("utf-8", "replace") or "the fail kind always fails")
