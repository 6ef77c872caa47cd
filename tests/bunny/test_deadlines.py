"""Deadlines on shared timers: a waiting future fails at its deadline, not before, and only then."""

from __future__ import annotations

import asyncio
import time

import pytest

from bunny.deadlines import TICK_S, Deadlines


async def test_a_future_still_waiting_fails_at_its_deadline_not_before() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    late: asyncio.Future[str] = loop.create_future()
    deadline = time.monotonic() + 0.05

    deadlines.watch(late, deadline)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(late, 5)

    assert time.monotonic() >= deadline


async def test_futures_answered_in_time_are_left_alone_and_forgotten() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + 0.05
    answered: asyncio.Future[str] = loop.create_future()
    waiting: asyncio.Future[str] = loop.create_future()

    watched = deadlines.watch(answered, deadline)
    assert deadlines.watch(waiting, deadline) is watched  # one tick, one timer
    answered.set_result("in time")
    watched.discard(answered)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(waiting, 5)

    assert answered.result() == "in time"


async def test_close_stops_the_timers() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    waiting: asyncio.Future[str] = loop.create_future()
    deadlines.watch(waiting, time.monotonic() + TICK_S)

    deadlines.close()
    after: asyncio.Future[None] = loop.create_future()
    loop.call_later(5 * TICK_S, after.set_result, None)
    await after

    assert not waiting.done()
