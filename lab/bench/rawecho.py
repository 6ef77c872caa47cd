"""The baseline: raw grpc.aio on the same proto, with no telemetry, no DNS and no checks.

``serve`` is a minimal JobService servicer that answers every request with its
payload; ``load`` is a minimal client that keeps ``--concurrency`` calls in
flight on one channel through :func:`bunny.loadgen.drive`, the loop ``bunny
bench`` uses, and prints the same JSON. With ``--stream`` the client sends each
job as one message on one ``RunStream`` call and matches answers by job id, as
bunny's stream runner does; the servicer answers a stream from its request
iterator.

Run each in a process of its own::

    python -m lab.bench.rawecho serve --listen 127.0.0.1:0
    python -m lab.bench.rawecho load --target 127.0.0.1:PORT --duration 10 --json

Imports are kept to gRPC, the generated code and the load loop, so that the peak
memory it reports is what raw grpc.aio costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence

import grpc

from bunny.loadgen import LoadSettings, drive
from bunnyrelay.v1 import jobs_pb2, jobs_pb2_grpc

READY = "raw echo listening on"
"""``serve`` prints this, then ``HOST:PORT``, once it accepts calls."""

_SUCCEEDED = jobs_pb2.JOB_STATUS_SUCCEEDED
_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
"""A W3C traceparent of an unsampled trace, as a client with tracing off sends it."""


class EchoServicer(jobs_pb2_grpc.JobServiceServicer):
    """Every job succeeds at once with its payload as output."""

    async def Run(  # noqa: N802 - the proto's method name
        self,
        request: jobs_pb2.JobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.JobRequest, jobs_pb2.JobResult],
    ) -> jobs_pb2.JobResult:
        return jobs_pb2.JobResult(job_id=request.job_id, status=_SUCCEEDED, output=request.payload)

    async def RunStream(  # noqa: N802 - the proto's method name
        self,
        request_iterator: AsyncIterator[jobs_pb2.JobRequest],
        context: grpc.aio.ServicerContext[jobs_pb2.JobRequest, jobs_pb2.JobResult],
    ) -> AsyncIterator[jobs_pb2.JobResult]:
        async for request in request_iterator:
            yield jobs_pb2.JobResult(
                job_id=request.job_id, status=_SUCCEEDED, output=request.payload
            )

    async def RunBatches(  # noqa: N802 - the proto's method name
        self,
        request_iterator: AsyncIterator[jobs_pb2.JobBatch],
        context: grpc.aio.ServicerContext[jobs_pb2.JobBatch, jobs_pb2.ResultBatch],
    ) -> AsyncIterator[jobs_pb2.ResultBatch]:
        async for batch in request_iterator:
            yield jobs_pb2.ResultBatch(
                results=[
                    jobs_pb2.JobResult(
                        job_id=request.job_id, status=_SUCCEEDED, output=request.payload
                    )
                    for request in batch.jobs
                ]
            )


async def serve(
    listen: str,
    servicer: EchoServicer | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    server = grpc.aio.server(interceptors=interceptors)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer or EchoServicer(), server)
    port = server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = listen.rpartition(":")[0]
    print(f"{READY} {host}:{port}", flush=True)
    await stop.wait()
    await server.stop(grace=None)


class _Stream:
    """One RunStream call shared by every job; answers matched to jobs by id."""

    def __init__(self, stub: jobs_pb2_grpc.JobServiceAsyncStub) -> None:
        self.call = stub.RunStream()
        self.waiting: dict[str, asyncio.Future[jobs_pb2.JobResult]] = {}
        self.lock = asyncio.Lock()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for result in self.call:
            future = self.waiting.pop(result.job_id, None)
            if future is not None:
                future.set_result(result)

    async def submit(self, request: jobs_pb2.JobRequest) -> jobs_pb2.JobResult:
        future: asyncio.Future[jobs_pb2.JobResult] = asyncio.get_running_loop().create_future()
        self.waiting[request.job_id] = future
        async with self.lock:
            await self.call.write(request)
        return await future

    async def close(self) -> None:
        await self.call.done_writing()
        await self.reader


async def load(
    target: str,
    settings: LoadSettings,
    *,
    stream: bool,
    payload_bytes: int,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    traceparent: bool = False,
) -> int:
    payload = os.urandom(payload_bytes)
    # What gRPC itself costs of the trace context every instrumented call carries: the
    # same header, made once, so that nothing but sending and receiving it is added. A
    # grpc.aio.Metadata, not a tuple: grpc.aio turns any other sequence into one per call.
    metadata = grpc.aio.Metadata(("traceparent", _TRACEPARENT)) if traceparent else None
    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
        stub = jobs_pb2_grpc.JobServiceStub(channel)
        streamed = _Stream(stub) if stream else None

        async def job() -> str | None:
            request = jobs_pb2.JobRequest(job_id=str(uuid.uuid4()), kind="echo", payload=payload)
            try:
                if streamed is not None:
                    result = await streamed.submit(request)
                else:
                    result = await stub.Run(request, timeout=30.0, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return None if result.status == _SUCCEEDED else "FAILED"

        try:
            result = await drive(job, settings, name="raw client", progress=sys.stderr)
        finally:
            if streamed is not None:
                await streamed.close()
    print(
        json.dumps(
            {
                "target": target,
                "mode": "stream" if stream else "unary",
                "payload_bytes": payload_bytes,
                **result.as_dict(),
                "grpcio": grpc.__version__,
                "pid": os.getpid(),
            }
        ),
        flush=True,
    )
    return 0 if result.failed == 0 and result.warmup_failed == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.bench.rawecho",
        description="The raw grpc.aio baseline of make bench: an echo server and a load client.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("serve", help="serve JobService with a bare echo servicer")
    server.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    client = commands.add_parser("load", help="closed-loop load with a bare stub")
    client.add_argument("--target", required=True, help="HOST:PORT of the server")
    client.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    client.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    client.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    client.add_argument("--payload-bytes", type=int, default=100, help="payload size")
    client.add_argument("--stream", action="store_true", help="one job per message on RunStream")
    client.add_argument(
        "--traceparent",
        action="store_true",
        help="send a (fixed) W3C traceparent header with every unary call",
    )
    client.add_argument("--json", action="store_true", help="accepted for symmetry; always JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.listen))
        return 0
    settings = LoadSettings(
        duration_s=args.duration, concurrency=args.concurrency, warmup_s=args.warmup
    )
    return asyncio.run(
        load(
            args.target,
            settings,
            stream=args.stream,
            payload_bytes=args.payload_bytes,
            traceparent=args.traceparent,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
