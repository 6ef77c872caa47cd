"""``python -m bunnyrelay.healthcheck``: one grpc.health.v1 check against a real gRPC server,
as an exit status and one line."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bunnyrelay import healthcheck

SERVICE = "bunnyrelay.v1.JobService"


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    """A gRPC server on loopback serving only grpc.health.v1, and its servicer."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def test_serving_is_exit_0_and_says_so(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([target]) == 0
    assert capsys.readouterr().out == f"{target} SERVING\n"


def test_a_draining_server_is_exit_1_at_once(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = health_server
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert healthcheck.main([target, "--service", SERVICE]) == 0
    servicer.enter_graceful_shutdown()
    assert healthcheck.main([target, "--service", SERVICE]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"{target} NOT_SERVING"


def test_an_unknown_service_is_exit_1_with_the_reason(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    target, _ = health_server
    assert healthcheck.main([target, "--service", "no.such.Service"]) == 1
    assert capsys.readouterr().err.startswith(f"{target} NOT_FOUND")


def test_nothing_listening_is_exit_1_within_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["127.0.0.1:9", "--timeout", "1"]) == 1
    assert capsys.readouterr().err.startswith("127.0.0.1:9 UNAVAILABLE")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["relay"], "port is missing"),
        (["127.0.0.1:70000"], "port must be a number"),
        (["127.0.0.1:50051", "--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_a_bad_argument_is_exit_2_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        healthcheck.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
