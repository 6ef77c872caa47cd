"""Deadlines for many waiting futures, with one timer per tick instead of one per future.

Jobs on a stream wait on futures, each until its job's deadline. A timer per job
(``asyncio.timeout``) costs a timer handle pushed on the event loop's heap, whose
entries compare in Python, and the work of cancelling it: with tens of jobs in
flight, about as much CPU as the rest of a job's trip through bunny. Here the
deadlines share timers: a future is put in the set of its tick (deadlines
rounded up to :data:`TICK_S`), and a tick's one timer fails what is still waiting
in it with :class:`TimeoutError`. A future is never failed before its deadline,
and at most one tick after it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

TICK_S: Final = 0.005
"""Deadlines are kept to this precision (rounded up): far below any job's timeout."""


class Deadlines:
    """The deadlines of futures waiting on one stream (made inside a running loop)."""

    __slots__ = ("_loop", "_ticks")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ticks: dict[int, tuple[set[asyncio.Future[Any]], asyncio.TimerHandle]] = {}

    def watch(self, future: asyncio.Future[Any], deadline: float) -> set[asyncio.Future[Any]]:
        """Fail ``future`` with TimeoutError if it is still waiting at ``deadline`` (a
        ``time.monotonic()`` reading). Returns the set to ``discard`` it from once it
        is done, so that it is not held until its tick."""
        tick = math.ceil(deadline / TICK_S)
        entry = self._ticks.get(tick)
        if entry is None:
            loop = self._loop
            # The loop's clock need not be time.monotonic(): the delay converts between them.
            when = loop.time() + (tick * TICK_S - time.monotonic())
            entry = self._ticks[tick] = (set(), loop.call_at(when, self._expire, tick))
        waiting = entry[0]
        waiting.add(future)
        return waiting

    def _expire(self, tick: int) -> None:
        waiting, _ = self._ticks.pop(tick)
        for future in waiting:
            if not future.done():
                future.set_exception(TimeoutError())

    def close(self) -> None:
        """Stop every timer (the stream ended: its futures have been failed or answered)."""
        for _, timer in self._ticks.values():
            timer.cancel()
        self._ticks.clear()
