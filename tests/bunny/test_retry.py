"""The one retry policy of bunny (a job's calls and DNS queries alike), on a fake clock:
bounded by the deadline, backoff capped, one draw per wait, pushback honoured."""

from __future__ import annotations

import random

import grpc
import pytest

from bunny.errors import BunnyError, JobRejected, RelayOverloaded, RelayUnavailable
from bunny.retry import RetryPolicy, call_with_retries, retry_after_first
from tests.fakeclock import FakeClock


class CountingRandom(random.Random):
    """A seeded random source that counts its draws."""

    def __init__(self) -> None:
        super().__init__(7)
        self.draws = 0

    def uniform(self, a: float, b: float) -> float:
        self.draws += 1
        return super().uniform(a, b)


def _unavailable() -> RelayUnavailable:
    return RelayUnavailable("gone", code=grpc.StatusCode.UNAVAILABLE, peer="10.0.0.1:50051")


class Failing:
    """An attempt that fails with ``error`` until ``passes_at`` on the clock (never: None)."""

    def __init__(self, clock: FakeClock, error: BunnyError, passes_at: float | None = None) -> None:
        self.clock = clock
        self.error = error
        self.passes_at = passes_at
        self.started: list[float] = []

    async def __call__(self, number: int) -> str:
        assert number == len(self.started) + 1
        self.started.append(self.clock())
        if self.passes_at is not None and self.clock() >= self.passes_at:
            return "done"
        raise self.error


async def test_by_default_a_failure_that_can_pass_is_retried_until_the_deadline() -> None:
    clock, rng = FakeClock(), CountingRandom()
    attempt = Failing(clock, _unavailable())
    deadline = clock() + 30.0

    with pytest.raises(RelayUnavailable):
        await call_with_retries(
            attempt,
            policy=RetryPolicy(),
            deadline=deadline,
            clock=clock,
            sleep=clock.sleep,
            rng=rng,
        )

    # Far more than a handful of attempts, none closer together than the cap allows apart,
    # the last one started just before the deadline, and nothing after it.
    assert len(attempt.started) > 30
    assert max(clock.slept) <= RetryPolicy().backoff_max_s
    assert deadline - RetryPolicy().last_try_s <= attempt.started[-1] < deadline
    assert clock() <= deadline
    # One random draw per wait: the deadline check did not draw a second one.
    assert rng.draws == len(clock.slept)


async def test_a_peer_that_comes_back_is_found_within_the_backoff_cap() -> None:
    clock = FakeClock()
    back_at = clock() + 7.3
    attempt = Failing(clock, _unavailable(), passes_at=back_at)

    result = await call_with_retries(
        attempt, policy=RetryPolicy(), deadline=clock() + 30, clock=clock, sleep=clock.sleep
    )

    assert result == "done"
    assert back_at <= attempt.started[-1] <= back_at + RetryPolicy().backoff_max_s


async def test_attempts_when_given_cap_the_retries_too() -> None:
    clock = FakeClock()
    attempt = Failing(clock, _unavailable())

    with pytest.raises(RelayUnavailable):
        await call_with_retries(
            attempt,
            policy=RetryPolicy(attempts=3),
            deadline=clock() + 30,
            clock=clock,
            sleep=clock.sleep,
        )

    assert len(attempt.started) == 3


async def test_a_failure_that_cannot_pass_fails_at_once() -> None:
    clock = FakeClock()
    rejected = JobRejected("no", code=grpc.StatusCode.INVALID_ARGUMENT, peer="p")
    attempt = Failing(clock, rejected)

    with pytest.raises(JobRejected):
        await call_with_retries(
            attempt, policy=RetryPolicy(), deadline=clock() + 30, clock=clock, sleep=clock.sleep
        )

    assert len(attempt.started) == 1
    assert clock.slept == []


async def test_relays_pushback_is_waited_out_exactly_and_ends_the_retries_past_the_deadline() -> (
    None
):
    clock = FakeClock()
    overloaded = RelayOverloaded(
        "busy", code=grpc.StatusCode.RESOURCE_EXHAUSTED, peer="p", pushback_s=2.5
    )
    attempt = Failing(clock, overloaded)

    with pytest.raises(RelayOverloaded):
        await call_with_retries(
            attempt, policy=RetryPolicy(), deadline=clock() + 6.0, clock=clock, sleep=clock.sleep
        )

    # At 0, 2.5 and 5.0; a fourth at 7.5 would be past the deadline, so none is made.
    assert clock.slept == [2.5, 2.5]
    assert len(attempt.started) == 3


async def test_without_a_deadline_attempts_are_required() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="deadline or a number of attempts"):
        await call_with_retries(
            Failing(clock, _unavailable()), policy=RetryPolicy(), deadline=None, clock=clock
        )


@pytest.mark.parametrize(
    "values",
    [{"attempts": 0}, {"backoff_base_s": 0.0}, {"backoff_base_s": 2.0}, {"last_try_s": -1.0}],
)
def test_a_policy_that_cannot_work_is_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each value has its own message
        RetryPolicy(**values)  # type: ignore[arg-type]


async def test_a_caller_that_made_the_first_try_itself_gets_the_retries_that_remain() -> None:
    clock = FakeClock()
    attempt = Failing(clock, _unavailable(), passes_at=clock() + 0.5)
    # The caller's own first try failed at once; retry_after_first goes on from try 2.
    attempt.started.append(clock())

    result = await retry_after_first(
        attempt,
        _unavailable(),
        policy=RetryPolicy(attempts=50),
        deadline=None,
        clock=clock,
        sleep=clock.sleep,
    )

    assert result == "done"
    assert len(attempt.started) >= 3
    assert len(clock.slept) == len(attempt.started) - 1


async def test_a_first_failure_that_cannot_pass_is_raised_again_without_another_try() -> None:
    clock = FakeClock()
    attempt = Failing(clock, _unavailable())
    rejected = JobRejected("no", code=grpc.StatusCode.INVALID_ARGUMENT, peer="p")

    with pytest.raises(JobRejected) as raised:
        await retry_after_first(
            attempt, rejected, policy=RetryPolicy(), deadline=clock() + 30, clock=clock
        )

    assert raised.value is rejected
    assert attempt.started == []
