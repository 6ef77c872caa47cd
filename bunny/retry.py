"""When and how bunny retries a job's RPC.

Retry only what can succeed: an error's ``retryable`` attribute decides, not
the caller. Every retry is bounded twice, by the number of attempts and by the
job's deadline, and waits with exponential backoff and full jitter, except
when relay said how long to wait (``grpc-retry-pushback-ms``), which wins.
Job ids make retries safe: relay runs a job id at most once and replays the
stored result to a retry.

The first attempt is made without tenacity: a job that succeeds at once pays
nothing for the retry machinery.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from bunny.errors import BunnyError, RelayOverloaded

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how patiently to retry one job."""

    attempts: int = 4
    """Attempts in all, the first included."""
    backoff_base_s: float = 0.1
    """The first backoff's upper bound; each later one doubles it."""
    backoff_max_s: float = 2.0
    """No single backoff waits longer than this (pushback from relay excepted)."""

    def backoff(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**n)]."""
        return random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2.0**retry_number))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, BunnyError) and exc.retryable


def _wait_after(exc: BaseException | None, policy: RetryPolicy, retry_number: int) -> float:
    if isinstance(exc, RelayOverloaded) and exc.pushback_s is not None:
        return exc.pushback_s
    return policy.backoff(retry_number)


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: float,
) -> T:
    """Run ``attempt(n)`` for n = 1, 2, … until it returns, a non-retryable error, or a bound.

    ``deadline`` is a ``time.monotonic()`` value; no wait starts that would end
    after it. The last error is raised as it is.
    """
    try:
        return await attempt(1)
    except BunnyError as exc:
        if not exc.retryable or policy.attempts < 2:
            raise
        first_wait = _wait_after(exc, policy, 0)
        if time.monotonic() + first_wait >= deadline:
            raise
    await asyncio.sleep(first_wait)

    # From here on tenacity counts the retries: its attempt n is the job's attempt n + 1.
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return _wait_after(exc, policy, state.attempt_number)

    def stop(state: RetryCallState) -> bool:
        return (
            state.attempt_number + 1 >= policy.attempts
            or time.monotonic() + wait(state) >= deadline
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable), wait=wait, stop=stop, reraise=True
    )
    async for state in retrying:
        with state:
            return await attempt(state.retry_state.attempt_number + 1)
    raise AssertionError("unreachable: tenacity returns or re-raises")
