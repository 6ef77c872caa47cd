"""``sleep``: wait for the payload's milliseconds, for trying deadlines, drains and load."""

from __future__ import annotations

import asyncio

from relay.kinds.handler import InvalidPayload, JobInput, kind

SLEEP_MAX_MS = 600_000
"""The longest ``sleep`` job: long enough for any demo, short enough not to pin a slot forever."""


def _preview(payload: bytes, limit: int = 32) -> str:
    return repr(payload[:limit]) + ("..." if len(payload) > limit else "")


@kind("sleep")
async def sleep(job: JobInput) -> bytes:
    """Sleep for the payload's ASCII milliseconds (at most 10 minutes)."""
    text = job.payload.strip()
    # bytes.isdigit is ASCII-only, so int() never sees signs, underscores or other scripts.
    if not text.isdigit() or len(text) > 9:
        raise InvalidPayload(
            "sleep expects the payload to be a whole number of milliseconds in ASCII, "
            f"e.g. b'250'; got {_preview(job.payload)}"
        )
    millis = int(text)
    if millis > SLEEP_MAX_MS:
        raise InvalidPayload(f"sleep is limited to {SLEEP_MAX_MS} ms (10 min); got {millis} ms")
    await asyncio.sleep(millis / 1000)
    return b"slept " + text + b" ms"
