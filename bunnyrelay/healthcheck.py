"""``python -m bunnyrelay.healthcheck HOST:PORT``: one ``grpc.health.v1`` check, as an exit status.

Kubernetes asks relay's health service itself (the chart's native ``grpc`` probes);
Docker and Compose can only run a command in the container, and the image has no
``grpc_health_probe``. This is that command, built on the same health stubs relay
serves, so a compose health check is a real gRPC health check rather than a port
knock::

    python -m bunnyrelay.healthcheck 127.0.0.1:50051            # the whole server
    python -m bunnyrelay.healthcheck 127.0.0.1:50051 --service bunnyrelay.v1.JobService

It prints one line (``127.0.0.1:50051 SERVING``) and exits 0 only for SERVING; any
other status, an error or no answer within ``--timeout`` is exit 1, with the reason.
A draining relay answers NOT_SERVING, so it turns unhealthy at once.

It speaks plaintext only, like the kubelet's probes. A relay serving TLS is checked
on its plaintext health-only port (``relay serve --health-listen 127.0.0.1:8086``),
which shares the main port's health status, NOT_SERVING on drain included::

    python -m bunnyrelay.healthcheck 127.0.0.1:8086
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bunnyrelay.settings import SettingError, parse_host_port

SERVING = "SERVING"


def check(target: str, *, service: str = "", timeout: float = 2.0) -> str:
    """The status name ``target`` reports for ``service``; raises :class:`grpc.RpcError`."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bunnyrelay.healthcheck",
        description="Ask a gRPC server's health service; exit 0 only when it is SERVING.",
    )
    parser.add_argument("target", metavar="HOST:PORT", help="the server, e.g. 127.0.0.1:50051")
    parser.add_argument(
        "--service", default="", help="the service to ask about (default: the whole server)"
    )
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for the answer (default: 2)"
    )
    args = parser.parse_args(argv)
    try:
        target = str(parse_host_port(args.target))
    except SettingError as error:
        parser.error(str(error))
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        status = check(target, service=args.service, timeout=args.timeout)
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        name = code.name if code is not None else "ERROR"
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"{target} {name}" + (f": {details}" if details else ""), file=sys.stderr)
        return 1
    print(f"{target} {status}")
    return 0 if status == SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
