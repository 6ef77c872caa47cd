"""Fixtures shared by every test folder: the lab's DNS server, OTLP receiver and relay processes.

Each fixture starts real parts on loopback and tears them down even when the
test fails; nothing listens on anything but 127.0.0.0/8.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import pytest

from bunnyrelay.lab.dnsserver import ZoneServer
from bunnyrelay.lab.otlpsink import OtlpSink
from bunnyrelay.lab.processes import RelayProcess, relay_process

RELAY_NAME = "relay.private.aws.internal"
ZONE = "private.aws.internal"

StartRelay = Callable[..., AbstractAsyncContextManager[RelayProcess]]


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
    """``async with start_relay("127.0.0.1:0", args=[...]) as relay:`` a real relay process."""

    def start(
        listen: str = "127.0.0.1:0", *, args: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> AbstractAsyncContextManager[RelayProcess]:
        return relay_process(listen, args=args, env={**sink.env("relay"), **(env or {})})

    return start
