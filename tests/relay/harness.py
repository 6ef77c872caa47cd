"""Starting relay in the test process, talking to it, and reading what it says.

Every relay started here listens on 127.0.0.1 with port 0 and is stopped when
its ``async with`` block ends, even when the test failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry import metrics, trace

from bunnyrelay.settings import HostPort
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc
from relay.config import RelayConfig
from relay.kinds.handler import JobInput
from relay.kinds.registry import Registry
from relay.server import Relay, running_server
from relay.stores.base import Claim, IdempotencyStore, Replay
from relay.stores.memory import MemoryStore
from relay.stores.spec import StoreSpec

if TYPE_CHECKING:
    from bunnyrelay.v1.jobs_pb2_grpc import JobServiceAsyncStub


def config(**overrides: Any) -> RelayConfig:
    values: dict[str, Any] = {
        "listen": HostPort("127.0.0.1", 0),
        "instance_name": "relay-test",
        # The durable stores have tests of their own; here nothing should touch the disk.
        "store": StoreSpec("memory"),
    }
    values.update(overrides)
    return RelayConfig(**values)


@dataclass
class Local:
    """A relay in this process and a client channel to it."""

    relay: Relay
    channel: grpc.aio.Channel
    stub: JobServiceAsyncStub


def async_stub(channel: grpc.aio.Channel) -> JobServiceAsyncStub:
    # The generated overloads pick the async stub only when grpc's types are known.
    stub: Any = jobs_pb2_grpc.JobServiceStub(channel)
    return cast("JobServiceAsyncStub", stub)


@asynccontextmanager
async def local_relay(
    *,
    kinds: Registry | None = None,
    idempotency_store: IdempotencyStore | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    logger: logging.Logger | None = None,
    **overrides: Any,
) -> AsyncIterator[Local]:
    async with (
        running_server(
            config(**overrides),
            kinds=kinds,
            store=idempotency_store,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            # Not "relay": code that configures that logger in-process turns its propagation
            # off, and caplog would no longer see these records.
            logger=logger or logging.getLogger("tests.relay"),
        ) as relay,
        grpc.aio.insecure_channel(relay.target) as channel,
    ):
        yield Local(relay, channel, async_stub(channel))


def job(
    job_id: str, kind: str = "echo", payload: bytes = b"", **attributes: str
) -> jobs_pb2.JobRequest:
    return jobs_pb2.JobRequest(job_id=job_id, kind=kind, payload=payload, attributes=attributes)


async def wait_until(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``within`` seconds."""
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    assert predicate(), f"still false after {within} s"


async def logged(
    stderr: asyncio.StreamReader, event: str, *, count: int = 1, kept: list[bytes]
) -> None:
    """Read a relay process's log until ``count`` lines of ``event`` have gone by (20 s at
    most); every line read is appended to ``kept``."""
    needle = f"event={event}".encode()
    seen = 0
    async with asyncio.timeout(20):
        while seen < count:
            line = await stderr.readline()
            assert line, f"relay's log ended before {count} {event} lines: {b''.join(kept)!r}"
            kept.append(line)
            seen += needle in line


async def health_becomes(channel: grpc.aio.Channel, service: str, status: int) -> None:
    """Watch ``service``'s health (grpc.health.v1 Watch) until it says ``status`` (20 s at most)."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=20
    )
    try:
        async for update in watch:
            if update.status == status:
                return
    finally:
        watch.cancel()
    raise AssertionError(f"the health watch of {service!r} ended before status {status}")


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    # from_call also checks that the details agree with the call's code and message.
    status = rpc_status.from_call(error)
    assert status is not None, "no grpc-status-details-bin in the trailing metadata"
    return status


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for detail in rich_status(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no google.rpc.ErrorInfo in the status details")


def details(error: grpc.aio.AioRpcError) -> str:
    return error.details() or ""


def trailing(error: grpc.aio.AioRpcError, key: str) -> str | None:
    for name, value in error.trailing_metadata() or ():
        if name == key:
            return str(value)
    return None


@dataclass
class CountingKinds:
    """The built-in kinds plus two for tests: ``count`` records each run and, when the
    payload is ``b"wait"``, holds it until ``gate`` opens; ``crash`` is a buggy handler."""

    runs: list[str] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    kinds: Registry = field(default_factory=Registry.builtin)

    def __post_init__(self) -> None:
        @self.kinds.kind("count")
        async def count(job: JobInput) -> bytes:
            self.runs.append(job.job_id)
            if job.payload == b"wait":
                await self.gate.wait()
            return b"run %d" % len(self.runs)

        @self.kinds.kind("crash")
        async def crash(job: JobInput) -> bytes:
            raise ZeroDivisionError("a bug in a handler")


class WatchedStore(MemoryStore):
    """The memory store, telling a test when requests have reached it."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__(capacity)
        self.reserves = 0
        self._reached = asyncio.Event()

    async def reserve(self, job_id: str, fingerprint: bytes) -> Replay | Claim:
        self.reserves += 1
        self._reached.set()
        # From here to its wait for a running duplicate nothing yields: once counted, a
        # duplicate is waiting.
        return await super().reserve(job_id, fingerprint)

    async def reached(self, count: int) -> None:
        """Return once ``count`` requests have asked the store (10 s at most)."""
        async with asyncio.timeout(10):
            while self.reserves < count:
                self._reached.clear()
                await self._reached.wait()


async def collect(call: Any) -> list[Any]:
    return [result async for result in call]


async def read_until_end(call: Any) -> tuple[list[Any], grpc.aio.AioRpcError | None]:
    """Every result a stream sends, and the error it ends with (None for OK)."""
    results = []
    try:
        # read(), not iteration, so that a test may have read() some results first.
        while (result := await call.read()) is not grpc.aio.EOF:
            results.append(result)
    except grpc.aio.AioRpcError as error:
        return results, error
    return results, None


def by_id(results: Iterable[Any]) -> dict[str, Any]:
    return {result.job_id: result for result in results}
