"""How much group commit buys: the SQLite store with and without it, in the same run.

    .venv/bin/python -m tests.relay.stores.bench_sqlite [JOBS] [CONCURRENCY]

Each job is what relay asks of its store: a claim (read + insert, committed
before the job runs) and its result (committed before relay answers). The
baseline commits each of those steps in a transaction of its own; group
commit puts whatever is queued into one. The memory store is the ceiling.
Each row also shows the CPU the whole process spent per job (every thread:
the event loop, the store's writer, and through relay the client too), which
varies less than jobs/s on a shared machine, and for SQLite the writer's commits
and its thread's CPU per job.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bunnyrelay.settings import HostPort
from bunnyrelay.v1.jobs_pb2 import JobRequest, JobResult
from relay.config import RelayConfig
from relay.server import running_server
from relay.stores.base import Claim, IdempotencyStore, fingerprint
from relay.stores.memory import MemoryStore
from relay.stores.spec import StoreSpec
from relay.stores.sqlite import MAX_BATCH, SqliteStore
from tests.relay.harness import async_stub

LOG = logging.getLogger("bench")


@dataclass(frozen=True)
class Rate:
    jobs_per_s: float
    cpu_us_per_job: float
    """Process CPU (all threads) per job."""
    commits_per_job: float | None = None
    """The SQLite writer's commits per job (None for the memory store)."""
    writer_cpu_us_per_job: float | None = None
    """The SQLite writer thread's CPU per job, part of the process's."""


@dataclass(frozen=True)
class _Start:
    wall: float
    cpu: float
    commits: int
    writer_cpu: float | None

    @classmethod
    def now(cls, store: IdempotencyStore) -> _Start:
        if isinstance(store, SqliteStore):
            writer = store.writer
            return cls(
                time.perf_counter(), time.process_time(), writer.commits, writer.thread_cpu_s()
            )
        return cls(time.perf_counter(), time.process_time(), 0, None)

    def rate(self, jobs: int, store: IdempotencyStore) -> Rate:
        wall = time.perf_counter() - self.wall
        cpu = (time.process_time() - self.cpu) / jobs * 1e6
        if not isinstance(store, SqliteStore):
            return Rate(jobs / wall, cpu)
        writer = store.writer
        writer_cpu, started = writer.thread_cpu_s(), self.writer_cpu
        return Rate(
            jobs / wall,
            cpu,
            (writer.commits - self.commits) / jobs,
            None if writer_cpu is None or started is None else (writer_cpu - started) / jobs * 1e6,
        )


async def jobs_per_second(store: IdempotencyStore, jobs: int, concurrency: int) -> Rate:
    fp = fingerprint("echo", b"x" * 64, {})
    result = JobResult(output=b"x" * 64)
    ids = iter(range(jobs))

    async def worker() -> None:
        for n in ids:
            claim = await store.reserve(f"job-{n}", fp)
            assert isinstance(claim, Claim)
            await store.complete(claim, result)

    start = _Start.now(store)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return start.rate(jobs, store)


async def relay_jobs_per_second(store: IdempotencyStore, jobs: int, concurrency: int) -> Rate:
    config = RelayConfig(
        listen=HostPort("127.0.0.1", 0),
        store=StoreSpec("memory"),  # replaced by ``store``
        max_in_flight=max(concurrency, 1),
        instance_name="bench",
    )
    ids = iter(range(jobs))
    async with (
        running_server(config, store=store, logger=LOG) as relay,
        grpc.aio.insecure_channel(relay.target) as channel,
    ):
        stub = async_stub(channel)

        async def worker() -> None:
            for n in ids:
                await stub.Run(JobRequest(job_id=f"job-{n}", kind="echo", payload=b"x" * 64))

        start = _Start.now(store)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return start.rate(jobs, store)


async def measure(jobs: int, concurrency: int, *, through_relay: bool) -> dict[str, Rate]:
    run = relay_jobs_per_second if through_relay else jobs_per_second
    rates: dict[str, Rate] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, batch in (("one commit per step", 1), ("group commit", MAX_BATCH)):
            store = SqliteStore(
                Path(scratch) / f"{batch}-{through_relay}.sqlite3",
                capacity=jobs,
                retention_s=3600,
                instance="bench",
                logger=LOG,
                max_batch=batch,
            )
            if through_relay:
                rates[name] = await run(store, jobs, concurrency)  # the relay opens and closes it
                continue
            await store.open()
            try:
                rates[name] = await run(store, jobs, concurrency)
            finally:
                await store.close()
    rates["memory (ceiling)"] = await run(MemoryStore(jobs), jobs, concurrency)
    return rates


def report(rates: dict[str, Rate], title: str) -> str:
    base = rates["one commit per step"].jobs_per_s
    lines = [title]
    for name, rate in rates.items():
        lines.append(
            f"  {name:<22} {rate.jobs_per_s:10.0f} jobs/s  {rate.jobs_per_s / base:6.1f}x"
            f"  {rate.cpu_us_per_job:8.0f} µs CPU/job"
            + ("" if rate.commits_per_job is None else f"  {rate.commits_per_job:5.2f} commits/job")
            + (
                ""
                if rate.writer_cpu_us_per_job is None
                else f"  writer thread {rate.writer_cpu_us_per_job:4.0f} µs CPU/job"
            )
        )
    return "\n".join(lines)


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    where = f"{jobs} jobs, {concurrency} at a time, SQLite in WAL mode (results fsynced)"
    store_only = asyncio.run(measure(jobs, concurrency, through_relay=False))
    print(report(store_only, f"the store alone, {where}:"))
    relay = asyncio.run(measure(jobs, concurrency, through_relay=True))
    print(report(relay, f"through relay (unary calls on loopback), {where}:"))


if __name__ == "__main__":
    main()
