"""Admission: whether relay takes a job now, by its in-flight limit and its drain switch.

Refusals are :class:`relay.errors.Overloaded` (every slot busy, with a pushback
that says when one is likely to be free) and :class:`relay.errors.Draining`.
"""

from __future__ import annotations

import asyncio

from relay.errors import Draining, Overloaded

MIN_PUSHBACK_MS = 50
MAX_PUSHBACK_MS = 5_000


class Admission:
    """The in-flight limit, and the switch that closes relay to new jobs when it drains."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.closed = False
        self._mean_duration = 0.0
        self._idle_waiters: list[asyncio.Future[None]] = []

    def enter(self) -> None:
        """Take a slot, or raise :class:`Draining` or :class:`Overloaded`."""
        if self.closed:
            raise Draining()
        if self.in_flight >= self.limit:
            raise Overloaded.of(self.in_flight, self.limit, self.pushback_ms())
        self.in_flight += 1

    def leave(self, duration: float) -> None:
        """Give the slot back; ``duration`` (seconds) feeds the pushback estimate."""
        self.in_flight -= 1
        # An exponential average follows a change of workload within a few dozen jobs.
        self._mean_duration += 0.1 * (duration - self._mean_duration)
        if self.in_flight == 0 and self._idle_waiters:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    def pushback_ms(self) -> int:
        """How long until a slot is likely to be free: with every slot busy, one
        frees about every ``mean duration / limit``."""
        estimate = int(self._mean_duration * 1000 / self.limit)
        return max(MIN_PUSHBACK_MS, min(MAX_PUSHBACK_MS, estimate))

    def close(self) -> None:
        """Refuse new jobs from now on; those in flight go on."""
        self.closed = True

    async def wait_idle(self) -> None:
        """Return once no job holds a slot."""
        if self.in_flight == 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter
