"""When and how bunny retries: one policy for a job's calls to relay and for DNS queries.

Retry only what can pass: an error's ``retryable`` attribute decides, not the
caller. Every retry is bounded by a deadline (the job's, or the lookup's) and,
when the policy says so, by a number of attempts. Between attempts bunny waits
with exponential backoff and full jitter, capped so that a relay or nameserver
that is back is found soon, except when relay said how long to wait
(``grpc-retry-pushback-ms``), which wins. A wait is cut short so that a last
attempt still fits before the deadline, and no attempt starts that would not.
Each wait is drawn once: the deadline check reads the very sleep tenacity is
about to take. Job ids make RPC retries safe: relay runs a job id at
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
    last_try_s: float = 0.1
    """A wait that would leave less than this before the deadline is cut short, so that a
    last attempt still has this long; with less than half of it left, no attempt starts."""

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if not 0 < self.backoff_base_s <= self.backoff_max_s < math.inf:
            raise ValueError(
                f"backoff: 0 < base ({self.backoff_base_s}) <= max ({self.backoff_max_s}) "
                "must hold, and both be finite"
            )
        if not 0 <= self.last_try_s < math.inf:
            raise ValueError(f"last_try_s must be finite and at least 0, not {self.last_try_s}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after attempt ``attempt`` failed: uniform in [0, min(max, base * 2**(n-1))]."""
        return rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1)))


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, BunnyError) and exc.retryable


class _Wait(wait_base):
    """Pushback when relay gave one, else the policy's backoff, cut short so that a last
    attempt still fits before the deadline."""

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
            # relay said when to come back: never sooner (if that is past the deadline,
            # the stop rule ends the retries).
            return exc.pushback_s
        if self._deadline is None:
            return self._policy.backoff(retry_state.attempt_number, self._rng)
        left = self._deadline - self._clock()
        room = left - self._policy.last_try_s
        if room <= 0:
            # The attempt that just failed was the last try: waiting out the deadline is
            # what the stop rule sees, and it ends the retries.
            return max(left, 0.0)
        return min(self._policy.backoff(retry_state.attempt_number, self._rng), room)


class _Stop(stop_base):
    """Stop at the policy's attempts, or when the wait tenacity is about to take (the one
    :class:`_Wait` drew, not a second draw) leaves too little of the deadline to try."""

    def __init__(self, policy: RetryPolicy, deadline: float | None, clock: Clock) -> None:
        self._attempts = policy.attempts
        self._deadline = deadline
        self._clock = clock
        self._least = policy.last_try_s / 2

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._attempts is not None and retry_state.attempt_number >= self._attempts:
            return True
        if self._deadline is None:
            return False
        return self._deadline - (self._clock() + retry_state.upcoming_sleep) < self._least


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
    return await retry_after_first(
        attempt, first, policy=policy, deadline=deadline, clock=clock, sleep=sleep, rng=rng
    )


async def retry_after_first(
    attempt: Callable[[int], Awaitable[T]],
    first: BunnyError,
    *,
    policy: RetryPolicy,
    deadline: float | None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """:func:`call_with_retries` for a caller that made attempt 1 itself and got ``first``,
    a retryable error: attempts 2, 3, … as the policy allows, or ``first`` raised again.

    For a path where the first attempt is nearly always the only one, and the coroutine
    and closure a call of :func:`call_with_retries` costs are paid on every call.
    """
    if deadline is None and policy.attempts is None:
        raise ValueError("a retry needs a deadline or a number of attempts to stop at")
    if not first.retryable or policy.attempts == 1:
        raise first
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
