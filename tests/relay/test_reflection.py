"""Reflection: what clients that know relay only by reflection see, v1 and v1alpha alike.

The tools people use (grpcurl, ghz) run against a real relay process with no proto
file; the protocol's corners are checked in process with both protocol versions.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from lab.processes import RelayProcess, relay_process, run_command
from lab.tools import GHZ, GRPCURL, tool
from relay.reflection import V1, V1ALPHA
from tests.relay.harness import collect, local_relay

Request = reflection_pb2.ServerReflectionRequest
Response = reflection_pb2.ServerReflectionResponse


def _reflect(
    channel: grpc.aio.Channel, service: str
) -> grpc.aio.StreamStreamMultiCallable[Any, Any]:
    # The v1 and v1alpha messages are the same on the wire: one pair of classes asks both.
    return channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


def _files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = {}
    for data in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
        files[proto.name] = proto
    return files


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_both_protocol_versions_list_the_services_and_resolve_a_method_symbol(
    service: str,
) -> None:
    async with local_relay() as local:
        listing, method, unknown = await collect(
            _reflect(local.channel, service)(
                iter(
                    [
                        Request(list_services=""),
                        Request(file_containing_symbol="bunnyrelay.v1.JobService.Run"),
                        Request(file_containing_symbol="bunnyrelay.v1.JobService.Nope"),
                    ]
                ),
                timeout=10,
            )
        )

    assert [s.name for s in listing.list_services_response.service] == [
        "bunnyrelay.v1.JobService",
        "grpc.health.v1.Health",
        V1,
        V1ALPHA,
    ]
    files = _files(method)
    (service_proto,) = files["bunnyrelay/v1/jobs.proto"].service
    assert "Run" in {m.name for m in service_proto.method}
    # The imports come along: a client cannot build the file without them.
    assert "google/protobuf/timestamp.proto" in files
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "bunnyrelay.v1.JobService.Nope" in unknown.error_response.error_message


async def test_the_v1_service_describes_itself_and_the_typed_payloads_are_there_too() -> None:
    async with local_relay() as local:
        v1, payload = await collect(
            _reflect(local.channel, V1)(
                iter(
                    [
                        Request(file_containing_symbol=V1),
                        Request(file_containing_symbol="bunnyrelay.v1.WordCountRequest"),
                    ]
                ),
                timeout=10,
            )
        )

    (v1_file,) = _files(v1).values()
    assert v1_file.package == "grpc.reflection.v1"
    (method,) = v1_file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert "bunnyrelay/v1/wordcount.proto" in _files(payload)


# --- the tools, against a relay process, by reflection alone ----------------------------------


@pytest.fixture
async def relay() -> AsyncIterator[RelayProcess]:
    async with relay_process("127.0.0.1:0", args=["--store", "memory"]) as process:
        yield process


async def _run(*argv: str, timeout: float = 60) -> tuple[int, str, str]:
    return await run_command(argv, timeout=timeout)


async def test_grpcurl_lists_describes_and_calls_relay_knowing_it_only_by_reflection(
    relay: RelayProcess,
) -> None:
    grpcurl = str(tool(GRPCURL))
    address = f"127.0.0.1:{relay.port}"

    code, listed, err = await _run(grpcurl, "-plaintext", address, "list")
    assert code == 0, err
    assert listed.split() == [
        "bunnyrelay.v1.JobService",
        "grpc.health.v1.Health",
        V1,
        V1ALPHA,
    ]
    code, described, err = await _run(
        grpcurl, "-plaintext", address, "describe", "bunnyrelay.v1.JobService.Run"
    )
    assert code == 0, err
    assert "rpc Run ( .bunnyrelay.v1.JobRequest ) returns ( .bunnyrelay.v1.JobResult )" in described

    request = json.dumps({"job_id": "grpcurl-1", "kind": "sha256", "payload": "aGk="})
    code, answered, err = await _run(
        grpcurl, "-plaintext", "-d", request, address, "bunnyrelay.v1.JobService/Run"
    )
    assert code == 0, err
    result = json.loads(answered)
    assert result["status"] == "JOB_STATUS_SUCCEEDED"
    assert result["output"]  # the digest of "hi", base64 in JSON


async def test_ghz_loads_relay_by_reflection_with_a_method_symbol(relay: RelayProcess) -> None:
    code, out, err = await _run(
        str(tool(GHZ)),
        "--insecure",
        "--call",
        "bunnyrelay.v1.JobService/Run",
        "--data",
        '{"job_id": "ghz-{{.RequestNumber}}", "kind": "echo", "payload": "aGk="}',
        "--total",
        "200",
        "--concurrency",
        "8",
        "--format",
        "json",
        f"127.0.0.1:{relay.port}",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 200
    assert report["statusCodeDistribution"] == {"OK": 200}
