"""Group commit: one thread owns a storage connection and commits queued steps in groups.

Steps are submitted on the event loop; the steps one pass of the loop makes go
to the thread together, in one queue item, so the thread wakes at most once per
pass however many jobs the pass reached. The thread takes everything queued,
hands it to ``commit`` (which writes the batch and commits once), then settles
the waiting futures on the event loop with one wake-up. While one commit is
being synced to disk the next batch gathers, so concurrent jobs share their
fsyncs and the event loop never waits on the disk.

When the last batch held more than one step (other jobs are in flight), the
next one waits up to ``gather_s``, or until it is as large as the last, before
it commits: steps trickle in as the event loop reaches each job, and fewer,
larger commits leave the loop more of the interpreter (docs/stores.md has the
numbers). A lone step never waits.

Nothing here knows what a step does: :mod:`relay.stores.sqlite` gives the
steps and the ``commit`` that writes them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

GATHER_S = 0.001
"""Under load, how long a batch waits for more steps before it commits."""


class Step:
    """One thing to do in a commit, and who waits for its outcome.

    ``outcome`` is set on the writer thread and read on the event loop after
    the commit; ``future`` is None when nobody waits.
    """

    __slots__ = ("future", "outcome")

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None
        self.outcome: Any = None

    def settle(self, error: BaseException | None) -> None:
        """On the event loop, once the commit holding this step succeeded or failed."""
        future = self.future
        if future is None or future.done():  # nobody waits, or the waiter was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(self.outcome)


S = TypeVar("S", bound=Step)

Commit = Callable[[list[S]], BaseException | None]
"""Write and commit a batch on the writer thread; the error to settle its steps with, or None."""


class GroupCommitWriter(Generic[S]):
    """The writer thread and the queue in front of it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        commit: Commit[S],
        *,
        name: str,
        max_batch: int,
        gather_s: float = GATHER_S,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._commit = commit
        self._max_batch = max_batch
        self._gather_s = gather_s if max_batch > 1 else 0.0
        self._on_exit = on_exit
        self._pending: list[S] = []
        self._queue: queue.SimpleQueue[list[S] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.commits = 0
        """Batches committed (for tests and benchmarks)."""
        self.steps = 0
        """Steps in those batches."""

    def start(self) -> None:
        self._thread.start()

    def thread_cpu_s(self) -> float | None:
        """CPU seconds the writer thread has used so far (for benchmarks), while it runs;
        None before it starts, after it ends, or where threads have no CPU clock."""
        ident = self._thread.ident
        if ident is None or not self._thread.is_alive():
            return None  # an ended thread's id may name another by now
        if not hasattr(time, "pthread_getcpuclockid"):
            return None
        return time.clock_gettime(time.pthread_getcpuclockid(ident))

    def submit(self, step: S) -> asyncio.Future[Any]:
        """Queue ``step``; the future settles with its outcome once its batch committed."""
        future = step.future = self._loop.create_future()
        self.send(step)
        return future

    def send(self, step: S) -> None:
        """Queue ``step`` that nobody waits for."""
        self._pending.append(step)
        if len(self._pending) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self._queue.put(pending)

    async def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        self._flush()
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        steps: collections.deque[S] = collections.deque()
        last = 1
        stopping = False
        try:
            while True:
                if not steps:
                    if stopping:
                        return
                    item = self._queue.get()
                    if item is None:
                        return
                    steps.extend(item)
                stopping = self._take(steps, stopping, last)
                batch = [steps.popleft() for _ in range(min(len(steps), self._max_batch))]
                last = len(batch)
                error = self._commit(batch)
                if error is None:
                    self.commits += 1
                    self.steps += len(batch)
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    self._loop.call_soon_threadsafe(_settle, batch, error)
        finally:
            self._on_exit()

    def _take(self, steps: collections.deque[S], stopping: bool, last: int) -> bool:
        """Add what is queued to ``steps``; True once the stop has been asked for."""
        get = self._queue.get_nowait
        while not stopping:
            try:
                item = get()
            except queue.Empty:
                break
            if item is None:
                return True
            steps.extend(item)
        # Only when the last batch had company: a lone step must not wait for none.
        # Stop early once as many steps as last time are here: the rest are not coming.
        if stopping or last <= 1 or not self._gather_s:
            return stopping
        until = time.monotonic() + self._gather_s
        while len(steps) < last:
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                return True
            steps.extend(item)
        return False


def _settle(batch: list[Any], error: BaseException | None) -> None:
    for step in batch:
        step.settle(error)
