"""ghz, an outside load generator (Go), against relay and the raw baseline server.

ghz is pinned and installed by ``make tools`` (tools/install.sh) into .tools/bin.

The proto comes from relay's own server reflection, fetched once: this module
asks for the service, writes the file descriptors it gets (with their
dependencies) to a protoset, and hands ghz ``--protoset``, because the raw
baseline server serves no reflection and both must be called alike. (ghz also
finds relay by reflection alone, method symbol and all:
tests/relay/test_reflection.py.)

- unary: ``--concurrency`` calls in flight on one connection, each a new job id
  (``{{.UUID}}``); in-flight calls at the end are ignored (``--duration-stop ignore``).
- stream: ghz cannot keep a number of jobs in flight on one stream, closed loop, as
  bunny does; it runs one ``RunStream`` call at a time that sends
  ``--concurrency`` jobs (each a new id) and reads their results, then the next.
  Jobs per second are streams completed times jobs per stream; its latency
  figures are per stream, so none are reported per job.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lab.tools import GHZ, tool

SERVICE = "bunnyrelay.v1.JobService"
MODULE = "github.com/bojand/ghz"


async def fetch_protoset(target: str, service: str = SERVICE) -> bytes:
    """A serialized FileDescriptorSet for ``service``, from the server's reflection."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
        call = stub.ServerReflectionInfo(iter([request]))
        async for response in call:
            if response.HasField("error_response"):
                raise RuntimeError(
                    f"{target}: reflection has no {service}: "
                    f"{response.error_response.error_message}"
                )
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in response.file_descriptor_response.file_descriptor_proto
            ]
            break
        else:
            raise RuntimeError(f"{target}: reflection sent no answer")
    return _in_dependency_order(files).SerializeToString()


def _in_dependency_order(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
) -> descriptor_pb2.FileDescriptorSet:
    by_name = {f.name: f for f in files}
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for dependency in by_name[name].dependency:
            visit(dependency)
        ordered.append(by_name[name])

    for name in by_name:
        visit(name)
    return descriptor_pb2.FileDescriptorSet(file=ordered)


def ghz_path() -> Path:
    """The pinned ghz in .tools/bin; ToolMissingError (saying ``make tools``) if absent."""
    return tool(GHZ)


def version() -> str:
    """The ghz module version the binary was built from (``go version -m``), or what
    ``ghz --version`` says (``dev`` for a ``go install`` build) when Go is missing."""
    path = ghz_path()
    try:
        build = subprocess.run(
            ["go", "version", "-m", str(path)], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        build = ""
    for line in build.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", MODULE] and len(fields) > 2:
            return f"{MODULE} {fields[2]}"
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    return f"ghz --version: {done.stdout.strip() or done.stderr.strip()}"


def command(
    target: str,
    protoset: Path,
    *,
    stream: bool,
    duration_s: float,
    concurrency: int,
    payload_bytes: int,
) -> list[str]:
    """The ghz command line for one run (JSON report on stdout)."""
    payload = base64.b64encode(b"x" * payload_bytes).decode()
    job_id = "{{newUUID}}" if stream else "{{.UUID}}"
    data = json.dumps({"job_id": job_id, "kind": "echo", "payload": payload})
    argv = [
        str(ghz_path()),
        "--insecure",
        "--protoset",
        str(protoset),
        "--data",
        data,
        "--connections",
        "1",
        "--duration",
        f"{max(duration_s, 0.1):g}s",
        "--duration-stop",
        "ignore",
        "--format",
        "json",
    ]
    if stream:
        argv += [
            "--call",
            f"{SERVICE}.RunStream",
            "--concurrency",
            "1",
            "--stream-call-count",
            str(concurrency),
            "--stream-dynamic-messages",
        ]
    else:
        argv += ["--call", f"{SERVICE}.Run", "--concurrency", str(concurrency)]
    return [*argv, target]


@dataclass(frozen=True, slots=True)
class GhzSummary:
    """A ghz JSON report in bunny bench's terms (jobs, not calls)."""

    jobs: int
    failed: int
    jobs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    elapsed_s: float
    errors: dict[str, int]


def summary(report: dict[str, Any], *, stream: bool, jobs_per_call: int) -> GhzSummary:
    """Read ghz's report; a stream call carries ``jobs_per_call`` jobs."""
    total_s = float(report.get("total", 0)) / 1e9
    codes: dict[str, int] = report.get("statusCodeDistribution") or {}
    ok_calls = int(codes.get("OK", 0))
    failed_calls = sum(int(v) for k, v in codes.items() if k != "OK")
    per_call = jobs_per_call if stream else 1
    latencies = {
        int(item["percentage"]): float(item["latency"]) / 1e6
        for item in report.get("latencyDistribution") or ()
    }
    errors = report.get("errorDistribution") or {}
    return GhzSummary(
        jobs=(ok_calls + failed_calls) * per_call,
        failed=failed_calls * per_call,
        jobs_per_s=ok_calls * per_call / total_s if total_s > 0 else 0.0,
        p50_ms=None if stream else latencies.get(50),
        p99_ms=None if stream else latencies.get(99),
        elapsed_s=total_s,
        errors={str(k): int(v) for k, v in errors.items()},
    )
