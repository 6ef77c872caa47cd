"""Group commit: one thread owns a storage connection and commits queued steps in groups.

Steps are submitted on the event loop; the steps one pass of the loop makes go
to the thread together, and the loop rings for the thread only when it has
as many steps waiting as the thread asked for, so the thread wakes at most
once per batch however many passes brought its steps. The thread takes
everything queued, hands it to ``commit`` (which writes the batch and commits
once), then, when a ``sync`` is given, settles the steps that need no fsync
at once, syncs, and settles the rest: each settling is one wake-up of the
loop. While one batch is being synced to disk the next gathers, so concurrent
jobs share their fsyncs and the event loop never waits on the disk.

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

_NEVER = 1 << 62


class Step:
    """One thing to do in a commit, and who waits for its outcome.

    ``outcome`` is set on the writer thread and read on the event loop after
    the commit; ``future`` is None when nobody waits.
    """

    __slots__ = ("future", "outcome")

    durable = True
    """Whether the step settles only once its commit is synced to disk (see ``sync``)."""

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

Sync = Callable[[], BaseException | None]
"""Make what was committed so far durable (an fsync) on the writer thread; the error, or None."""


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
        sync: Sync | None = None,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._commit = commit
        self._sync = sync
        self._max_batch = max_batch
        self._gather_s = gather_s if max_batch > 1 else 0.0
        self._on_exit = on_exit
        self._pending: list[S] = []
        # The loop appends to the inbox and counts what it sent; the writer pops and counts
        # what it took: each counter has one writer, so neither loses an update.
        self._inbox: collections.deque[S] = collections.deque()
        self._sent = 0
        self._taken = 0
        self._want = _NEVER
        """How many waiting steps make the loop ring the doorbell (_NEVER: the writer is busy)."""
        self._doorbell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.commits = 0
        """Batches committed (for tests and benchmarks)."""
        self.steps = 0
        """Steps in those batches."""

    def start(self) -> None:
        self._thread.start()

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
        pending = self._pending
        if pending:
            self._pending = []
            self._inbox.extend(pending)
            self._sent += len(pending)
            if self._sent - self._taken >= self._want:
                self._ring()

    def _ring(self) -> None:
        self._want = _NEVER  # once: the writer wakes and looks for itself
        self._doorbell.put(None)

    async def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        self._flush()
        self._stopping = True
        self._ring()
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        last = 1
        try:
            while True:
                self._wait_for(1, None)
                if self._sent == self._taken:  # stopping, and nothing is left
                    return
                # Only when the last batch had company: a lone step must not wait for none.
                # Stop early once as many steps as last time are here: the rest are not coming.
                if last > 1 and self._gather_s:
                    self._wait_for(last, self._gather_s)
                batch = self._take()
                last = len(batch)
                error = self._commit(batch)
                if error is None:
                    self.commits += 1
                    self.steps += len(batch)
                    if self._sync is not None:
                        batch, error = self._synced(batch)
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    self._loop.call_soon_threadsafe(_settle, batch, error)
        finally:
            self._on_exit()

    def _wait_for(self, count: int, timeout: float | None) -> None:
        """Until ``count`` steps are queued, the stop is asked, or ``timeout`` seconds passed.

        The loop rings only when the count is reached, so the writer sleeps through
        the passes that bring fewer: each wake-up would take the interpreter lock from
        the busy loop for nothing.
        """
        until = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        self._want = count  # published before the count is read: a step sent now rings
        while self._sent - self._taken < count and not self._stopping:
            if until is not None:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
            try:
                self._doorbell.get(timeout=remaining)
            except queue.Empty:
                break
            self._want = count  # a ring resets it; a stale ring (a race) only wakes early
        self._want = _NEVER

    def _synced(self, batch: list[S]) -> tuple[list[S], BaseException | None]:
        """Settle the steps that need no sync now, sync, and return the rest with its error.

        A step that needs no fsync (a claim) does not wait for the one its batch
        may need: its job starts while the disk syncs the others' results.
        """
        assert self._sync is not None
        durable = [step for step in batch if step.durable]
        if not durable:
            return batch, None
        if len(durable) < len(batch):
            early = [step for step in batch if not step.durable]
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_settle, early, None)
        return durable, self._sync()

    def _take(self) -> list[S]:
        inbox = self._inbox
        batch = [inbox.popleft() for _ in range(min(len(inbox), self._max_batch))]
        self._taken += len(batch)
        return batch


def _settle(batch: list[Any], error: BaseException | None) -> None:
    for step in batch:
        step.settle(error)
