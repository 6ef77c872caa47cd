"""Fixtures shared by every test folder: the lab's DNS server, OTLP receiver and relay processes.

Each fixture starts real parts on loopback and tears them down even when the
test fails; nothing listens on anything but 127.0.0.0/8.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink
from lab.processes import RelayProcess, relay_process
from lab.redisserver import INSTALL_HINT, RedisServer, redis_server

RELAY_NAME = "relay.private.aws.internal"
ZONE = "private.aws.internal"

StartRelay = Callable[..., AbstractAsyncContextManager[RelayProcess]]


@pytest.fixture(autouse=True)
def _private_state_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A relay started without --state-dir keeps its default SQLite store here, not in the
    machine's /var/lib/relay: nothing outlives a test or leaks into the next one. (systemd's
    STATE_DIRECTORY, which relay honours, survives the RELAY_-free environments that tests
    give their child processes.)"""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "relay-state"))


@pytest.fixture
def trace_context_only() -> Iterator[None]:
    """Only W3C trace context in the global propagator (``OTEL_PROPAGATORS=tracecontext``),
    for as long as the test runs."""
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    try:
        yield
    finally:
        propagate.set_global_textmap(before)


@pytest.fixture
async def zone() -> AsyncIterator[ZoneServer]:
    """An authoritative server for private.aws.internal on 127.0.0.1 (the Route 53 zone's role)."""
    async with ZoneServer(zone=ZONE, negative_ttl=1) as server:
        yield server


@pytest.fixture
async def sink() -> AsyncIterator[OtlpSink]:
    """An OTLP/gRPC receiver that keeps every span sent to it."""
    async with OtlpSink() as receiver:
        yield receiver


@pytest.fixture
def start_relay(sink: OtlpSink) -> StartRelay:
    """``async with start_relay("127.0.0.1:0", args=[...]) as relay:`` a real relay process,
    its log in ``log_path`` when given."""

    def start(
        listen: str = "127.0.0.1:0",
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> AbstractAsyncContextManager[RelayProcess]:
        env = {**sink.env("relay"), **(env or {})}
        return relay_process(listen, args=args, env=env, log_path=log_path)

    return start


@pytest.fixture
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RedisServer]:
    """A real ``redis-server`` on 127.0.0.1, killed after the test. Without the binary the
    test fails (never skips), saying that ``make test`` installs it."""
    if shutil.which("redis-server") is None:
        pytest.fail(INSTALL_HINT)
    async with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server
