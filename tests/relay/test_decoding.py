"""Forgiving decoding: a request that does not decode is the client's mistake, on every service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from relay.decoding import register_forgiving

GARBAGE = b"\xff\xff\xff"


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    """A gRPC server on loopback with only the health service, registered forgivingly."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    register_forgiving(
        server, lambda target: health_pb2_grpc.add_HealthServicer_to_server(servicer, target)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
            yield opened
    finally:
        await server.stop(None)


async def _unary(channel: grpc.aio.Channel, method: str, data: bytes) -> None:
    call: Any = channel.unary_unary(method)
    await call(data, timeout=5)


async def _streamed(channel: grpc.aio.Channel, method: str, data: bytes) -> None:
    call: Any = channel.unary_stream(method)
    async for _ in call(data, timeout=5):
        pass


async def test_a_request_that_decodes_is_answered_as_before(channel: grpc.aio.Channel) -> None:
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", ["Check", "Watch"])
async def test_bytes_that_do_not_decode_are_invalid_argument_naming_the_method(
    channel: grpc.aio.Channel, method: str
) -> None:
    send = _unary if method == "Check" else _streamed
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await send(channel, f"/grpc.health.v1.Health/{method}", GARBAGE)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"grpc.health.v1.Health/{method} is not a valid protobuf message" in (
        failed.value.details() or ""
    )


async def test_a_method_the_servicer_leaves_unimplemented_says_so(
    channel: grpc.aio.Channel,
) -> None:
    # grpcio-health-checking's aio servicer has no List: its generated base raises.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _unary(channel, "/grpc.health.v1.Health/List", b"")
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "grpc.health.v1.Health/List" in (failed.value.details() or "")
