"""A fake clock for tests whose subject is time: it moves only when the test says so."""

from __future__ import annotations

import asyncio


class FakeClock:
    """``clock()`` is the time; ``await clock.sleep(s)`` moves it on by ``s`` at once."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        """Every sleep asked for, in order."""

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
