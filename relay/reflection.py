"""Server reflection: how grpcurl, ghz, grpcui, Postman and Kreya learn relay's API, no proto file.

Served under both names clients ask for: ``grpc.reflection.v1`` (what current
clients try first) and ``grpc.reflection.v1alpha`` (what older ones know). The
two protocols are the same messages in two packages, so one servicer answers
both, with the v1alpha message classes that grpcio-reflection ships.

A symbol may name a method (``bunnyrelay.v1.JobService.Run``): that is how
``ghz --call bunnyrelay.v1.JobService/Run`` and grpcui look a call up, and the
protobuf descriptor pool does not find methods by name, so they are looked up
through their service here.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, TypeAlias

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2 as messages

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
_METHOD = "ServerReflectionInfo"

# grpcio-reflection ships no type information: to mypy its messages are Any.
_Request: TypeAlias = Any
_Response: TypeAlias = Any
_REQUEST = messages.ServerReflectionRequest
_RESPONSE = messages.ServerReflectionResponse


def _v1_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding the v1 protocol's file, made from v1alpha's by renaming its package,
    so that a client can ask for the descriptor of the v1 service it is talking to."""
    proto = descriptor_pb2.FileDescriptorProto()
    messages.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new, 1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool


class Reflection:
    """Answers reflection requests about the files in ``pool`` (the default pool: every
    message relay has imported) and lists ``service_names`` and the reflection services."""

    def __init__(
        self,
        service_names: Iterable[str],
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        self._pools = (pool or descriptor_pool.Default(), _v1_pool())
        self._services = tuple(sorted({*service_names, V1, V1ALPHA}))

    def register(self, server: Any) -> None:
        """Add the service under both names to ``server`` (or to anything that registers
        handlers the way generated ``add_…_to_server`` code does)."""
        handler = grpc.stream_stream_rpc_method_handler(
            self.ServerReflectionInfo,
            request_deserializer=_REQUEST.FromString,
            response_serializer=_RESPONSE.SerializeToString,
        )
        for name in (V1, V1ALPHA):
            handlers = {_METHOD: handler}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
            server.add_registered_method_handlers(name, handlers)

    async def ServerReflectionInfo(  # noqa: N802 - the protocol's method name
        self, requests: AsyncIterable[_Request], context: Any
    ) -> AsyncIterator[_Response]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: _Request) -> _Response:
        """The response to one request of the stream."""
        asked = request.WhichOneof("message_request")
        if asked == "list_services":
            services = [messages.ServiceResponse(name=name) for name in self._services]
            return _RESPONSE(
                original_request=request,
                list_services_response=messages.ListServiceResponse(service=services),
            )
        if asked == "file_by_filename":
            name = request.file_by_filename
            return self._files(request, self._find(lambda pool: pool.FindFileByName(name)), name)
        if asked == "file_containing_symbol":
            symbol = request.file_containing_symbol
            return self._files(request, self._file_of_symbol(symbol), symbol)
        if asked == "file_containing_extension":
            wanted = request.file_containing_extension
            file = self._find(
                lambda pool: (
                    pool.FindExtensionByNumber(
                        pool.FindMessageTypeByName(wanted.containing_type), wanted.extension_number
                    ).file
                )
            )
            shown = f"extension {wanted.extension_number} of {wanted.containing_type}"
            return self._files(request, file, shown)
        if asked == "all_extension_numbers_of_type":
            return self._extension_numbers(request, request.all_extension_numbers_of_type)
        return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "an empty reflection request")

    def _find(self, lookup: Any) -> Any:
        for pool in self._pools:
            try:
                return lookup(pool)
            except KeyError:
                continue
        return None

    def _file_of_symbol(self, symbol: str) -> FileDescriptor | None:
        file: FileDescriptor | None = self._find(lambda pool: pool.FindFileContainingSymbol(symbol))
        if file is not None:
            return file
        # Not a message, enum, field or service: perhaps a method, "package.Service.Method".
        service_name, _, method = symbol.rpartition(".")
        service = self._find(lambda pool: pool.FindServiceByName(service_name))
        if service is not None and method in service.methods_by_name:
            found: FileDescriptor = service.file
            return found
        return None

    def _files(self, request: _Request, file: FileDescriptor | None, asked: str) -> _Response:
        if file is None:
            return _error(
                request,
                grpc.StatusCode.NOT_FOUND,
                f"{asked!r} is not known here; this server serves {', '.join(self._services)}",
            )
        # The file and every file it imports, each once: a client needs them all to build it.
        files: dict[str, FileDescriptor] = {}
        pending = [file]
        while pending:
            each = pending.pop()
            if each.name not in files:
                files[each.name] = each
                pending.extend(each.dependencies)
        serialized = []
        for each in files.values():
            proto = descriptor_pb2.FileDescriptorProto()
            each.CopyToProto(proto)
            serialized.append(proto.SerializeToString())
        return _RESPONSE(
            original_request=request,
            file_descriptor_response=messages.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
        )

    def _extension_numbers(self, request: _Request, type_name: str) -> _Response:
        for pool in self._pools:
            try:
                message = pool.FindMessageTypeByName(type_name)
            except KeyError:
                continue
            numbers = sorted(extension.number for extension in pool.FindAllExtensions(message))
            return _RESPONSE(
                original_request=request,
                all_extension_numbers_response=messages.ExtensionNumberResponse(
                    base_type_name=message.full_name, extension_number=numbers
                ),
            )
        return _error(request, grpc.StatusCode.NOT_FOUND, f"{type_name!r} is not known here")


def _error(request: _Request, code: grpc.StatusCode, message: str) -> _Response:
    return _RESPONSE(
        original_request=request,
        error_response=messages.ErrorResponse(error_code=code.value[0], error_message=message),
    )
