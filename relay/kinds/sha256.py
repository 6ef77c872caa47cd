"""``sha256``: the hex SHA-256 digest of the payload."""

from __future__ import annotations

import hashlib

from relay.kinds.handler import JobInput, kind


@kind("sha256")
async def sha256(job: JobInput) -> bytes:
    """Return the hex SHA-256 digest of the payload."""
    return hashlib.sha256(job.payload).hexdigest().encode("ascii")
