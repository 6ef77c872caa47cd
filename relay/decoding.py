"""Requests that do not decode are the client's mistake: INVALID_ARGUMENT, on every service.

When a method's deserializer raises, gRPC answers UNKNOWN, which tells the
client "relay failed" when it was the request. The JobService has its own
forgiving deserializer (:func:`relay.checks.parse_request`); the standard
services relay serves beside it (health, reflection) are registered through
:func:`register_forgiving`, which wraps each of their methods once, when the
server is built: bytes that do not parse become INVALID_ARGUMENT naming the
method, and nothing is added to a call that decodes. A method the servicer
does not implement answers UNIMPLEMENTED (its generated base would raise, and
gRPC answer UNKNOWN).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import grpc

_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

_UNREADABLE = object()
"""What a wrapped deserializer returns for bytes that are not the method's request."""


class _UnreadableRequestError(Exception):
    """Raised into a streaming servicer in place of a request that did not decode."""


def _forgiving(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _UNREADABLE

    return parse


async def _checked(requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _UNREADABLE:
            raise _UnreadableRequestError
        yield request


_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _wrap(method: str, handler: _Handler) -> _Handler:
    """``handler`` with forgiving decoding; also, a method its servicer leaves to the generated
    base (which raises NotImplementedError, as grpcio-health-checking's aio servicer does for
    Health/List) answers UNIMPLEMENTED instead of UNKNOWN."""
    # The stubs type behaviors as sync ones; under grpc.aio they are coroutines or async
    # generators.
    behavior: Any = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    streaming_requests = handler.request_streaming
    unreadable = f"the request to {method} is not a valid protobuf message of its type"
    unimplemented = f"relay does not implement {method}"

    def given(arrived: Any) -> Any:
        if streaming_requests:
            return _checked(arrived)
        if arrived is _UNREADABLE:
            raise _UnreadableRequestError
        return arrived

    async def refuse(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
        if isinstance(exc, _UnreadableRequestError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, unreadable)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, unimplemented)

    call: Any
    if inspect.isasyncgenfunction(behavior):

        async def call(arrived: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async for response in behavior(given(arrived), context):
                    yield response
            except (_UnreadableRequestError, NotImplementedError) as exc:
                await refuse(context, exc)

    else:

        async def call(arrived: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(given(arrived), context)
            except (_UnreadableRequestError, NotImplementedError) as exc:
                await refuse(context, exc)

    make: Any = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
    return make(  # type: ignore[no-any-return]
        call,
        request_deserializer=_forgiving(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class _Collector:
    """Stands in for the server while generated ``add_…_to_server`` code registers."""

    def __init__(self) -> None:
        self.services: dict[str, Mapping[str, _Handler]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, _Handler]
    ) -> None:
        self.services[service] = handlers

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)


def register_forgiving(server: grpc.aio.Server, register: Callable[[Any], None]) -> None:
    """Run ``register(target)`` (a generated ``add_…Servicer_to_server``) against a stand-in,
    then add what it registered to ``server`` with every method's decoding made forgiving."""
    collected = _Collector()
    register(collected)
    if not collected.services:
        # Generated code too old to name its methods: register it as it is.
        server.add_generic_rpc_handlers(tuple(collected.generic))
        return
    for service, handlers in collected.services.items():
        wrapped = {name: _wrap(f"{service}/{name}", h) for name, h in handlers.items()}
        # Found through the generic handler only, not registered by method: grpc.aio's
        # server keeps one task waiting per registered method and, after every call of any
        # method, waits on all of them again, so each one registered here would cost every
        # job's call a little; these services are asked seldom.
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
