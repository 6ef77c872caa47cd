"""When and how bunny retries: one policy for a job's calls to relay and for DNS queries.

Retry only what can pass: an error's ``retryable`` attribute decides, not the
caller. Every retry is bounded by a deadline (the job's, or the lookup's) and,
when the policy says so, by a number of attempts. Between attempts bunny waits
with exponential backoff and full jitter, capped so that a relay or nameserver
that is back is found soon, except when relay said how long to wait
(``grpc-retry-pushback-ms``), which wins. No wait starts that would end after
the deadline. Each wait is drawn once: the deadline check reads the very sleep
tenacity is about to take. Job ids make RPC retries safe: relay runs a job id at
most once and replays the stored result to a retry.

The first attempt is made without tenacity: a call that succeeds at once pays
nothing for the retry machinery.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from bunny.errors import BunnyError, RelayOverloaded

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how patiently to retry one call."""

    attempts: int | None = None
    """Attempts in all, the first included; None: as many as fit before the deadline."""
    backoff_base_s: float = 0.1
    """The first wait's upper bound; each later one doubles it."""
    backoff_max_s: float = 1.0
    """No single wait is longer than this (pushback from relay excepted), so that a peer
    that comes back is tried again within about this long."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if not (
            0 < self.backoff_base_s <= self.backoff_max_s and math.isfinite(self.backoff_max_s)
        ):
            raise ValueError(
                f"backoff: 0 < base ({self.backoff_base_s}) <= max ({self.backoff_max_s}) "
                "must hold, and both be finite"
            )

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after attempt ``attempt`` failed: uniform in [0, min(max, base * 2**(n-1))]."""
        return rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1)))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, BunnyError) and exc.retryable


class _Wait(wait_base):
    """Pushback when relay gave one, else the policy's backoff; never past the deadline."""

    def __init__(
        self, policy: RetryPolicy, deadline: float | None, clock: Clock, rng: random.Random
    ) -> None:
        self._policy = policy
        self._deadline = deadline
        self._clock = clock
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RelayOverloaded) and exc.pushback_s is not None:
            pause = exc.pushback_s
        else:
            pause = self._policy.backoff(retry_state.attempt_number, self._rng)
        if self._deadline is not None:
            pause = min(pause, max(self._deadline - self._clock(), 0.0))
        return pause


class _Stop(stop_base):
    """Stop at the policy's attempts, or when the wait tenacity is about to take would
    reach the deadline (it was cut short to the deadline: no time is left to try)."""

    def __init__(self, policy: RetryPolicy, deadline: float | None, clock: Clock) -> None:
        self._attempts = policy.attempts
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._attempts is not None and retry_state.attempt_number >= self._attempts:
            return True
        if self._deadline is None:
            return False
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    deadline: float | None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``attempt(n)`` for n = 1, 2, … until it returns, a non-retryable error, or a bound.

    ``deadline`` is a ``clock()`` value (``time.monotonic()`` unless a test injects
    another clock and ``sleep``). The last error is raised as it is.
    """
    if deadline is None and policy.attempts is None:
        raise ValueError("a retry needs a deadline or a number of attempts to stop at")
    try:
        return await attempt(1)
    except BunnyError as exc:
        if not exc.retryable or policy.attempts == 1:
            raise
        first = exc
    # tenacity's attempt 1 is the failure above, replayed, so that its wait and stop
    # rules see the attempt count as it is.
    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        wait=_Wait(policy, deadline, clock, rng or _RNG),
        stop=_Stop(policy, deadline, clock),
        sleep=sleep,
        reraise=True,
    )
    async for state in retrying:
        with state:
            number = state.retry_state.attempt_number
            if number == 1:
                raise first
            return await attempt(number)
    raise AssertionError("unreachable: tenacity returns or re-raises")
