"""The group-commit writer, with a commit that only records what it was given."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from relay.stores.groupcommit import GroupCommitWriter, Step


class Named(Step):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class RecordingCommit:
    """Stands in for a database: records each batch, fails the batches it is told to."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_next = False
        self.closed = threading.Event()

    def __call__(self, batch: list[Named]) -> BaseException | None:
        self.batches.append([step.name for step in batch])
        for step in batch:
            step.outcome = f"{step.name} written"
        if self.fail_next:
            self.fail_next = False
            return OSError("the disk said no")
        return None


Writer = GroupCommitWriter[Named]


@pytest.fixture
def commit() -> RecordingCommit:
    return RecordingCommit()


async def _writer(
    commit: RecordingCommit, *, max_batch: int = 64, gather_s: float = 60.0
) -> AsyncIterator[Writer]:
    writer: Writer = GroupCommitWriter(
        asyncio.get_running_loop(),
        commit,
        name="test-writer",
        max_batch=max_batch,
        gather_s=gather_s,
        on_exit=commit.closed.set,
    )
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


@pytest.fixture
async def writer(commit: RecordingCommit) -> AsyncIterator[Writer]:
    async for started in _writer(commit):
        yield started


async def test_steps_of_one_pass_of_the_loop_are_committed_together(
    writer: Writer, commit: RecordingCommit
) -> None:
    futures = [writer.submit(Named(f"s{n}")) for n in range(5)]
    assert await asyncio.gather(*futures) == [f"s{n} written" for n in range(5)]
    assert commit.batches == [["s0", "s1", "s2", "s3", "s4"]]
    assert (writer.commits, writer.steps) == (1, 5)


async def test_a_lone_step_never_waits_for_company(writer: Writer, commit: RecordingCommit) -> None:
    # The gather window is a minute: a step that waited for it would time out here.
    for n in range(3):
        await asyncio.wait_for(writer.submit(Named(f"alone-{n}")), timeout=10)
    assert commit.batches == [["alone-0"], ["alone-1"], ["alone-2"]]


async def test_after_a_batch_with_company_the_next_gathers_as_many_before_it_commits(
    writer: Writer, commit: RecordingCommit
) -> None:
    await asyncio.gather(*(writer.submit(Named(f"a{n}")) for n in range(3)))
    # Three steps, each in a pass of the loop of its own: they still go as one batch.
    later = []
    for n in range(3):
        later.append(writer.submit(Named(f"b{n}")))
        await asyncio.sleep(0)  # the next pass of the loop
    await asyncio.wait_for(asyncio.gather(*later), timeout=10)
    assert commit.batches == [["a0", "a1", "a2"], ["b0", "b1", "b2"]]


async def test_a_failed_commit_fails_every_step_in_it_and_the_writer_goes_on(
    writer: Writer, commit: RecordingCommit
) -> None:
    commit.fail_next = True
    failed = await asyncio.gather(
        writer.submit(Named("x")), writer.submit(Named("y")), return_exceptions=True
    )
    assert [str(error) for error in failed] == ["the disk said no"] * 2
    assert writer.commits == 0
    after = await asyncio.gather(writer.submit(Named("z1")), writer.submit(Named("z2")))
    assert list(after) == ["z1 written", "z2 written"]


async def test_batches_are_bounded_and_stop_commits_what_is_queued(
    commit: RecordingCommit,
) -> None:
    async for writer in _writer(commit, max_batch=2, gather_s=0.0):
        for n in range(5):
            writer.send(Named(f"q{n}"))  # nobody waits for these
    assert commit.closed.is_set()
    assert [len(batch) for batch in commit.batches] == [2, 2, 1]
    assert [name for batch in commit.batches for name in batch] == [f"q{n}" for n in range(5)]


async def test_the_writer_thread_cpu_is_counted_while_it_runs_and_not_after(
    commit: RecordingCommit,
) -> None:
    writer: Writer = GroupCommitWriter(
        asyncio.get_running_loop(), commit, name="test-writer", max_batch=64
    )
    assert writer.thread_cpu_s() is None  # not started
    writer.start()
    await writer.submit(Named("x"))
    used = writer.thread_cpu_s()
    assert used is not None
    assert used > 0.0  # the thread ran: its clock moved
    await writer.stop()
    assert writer.thread_cpu_s() is None
