"""Which failed calls bunny retries: the status a call ended with, turned into bunny's error.

The statuses are built here as grpc.aio reports them (a fake of the error object
only); tests/faults/test_fault_suite.py meets the same statuses for real, from a
relay stopping at the end of its drain and from streams cut by a reset connection.
"""

from __future__ import annotations

import grpc
import pytest

from bunny.errors import JobRejected, RelayCallFailed, RelayUnavailable
from bunny.rpcerrors import classify_rpc_error

PEER = "127.0.0.1:50051"


def _fake_status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, details=details)


def test_a_call_cancelled_by_a_relay_that_is_stopping_is_retried() -> None:
    # What a grpc.aio server answers to calls that reach it during server.stop().
    error = classify_rpc_error(_fake_status(grpc.StatusCode.CANCELLED, "CANCELLED"), PEER)
    assert type(error) is RelayUnavailable
    assert error.retryable
    assert error.code is grpc.StatusCode.CANCELLED


def test_a_stream_whose_write_failed_under_a_broken_connection_is_retried() -> None:
    # grpc.aio's own status when a write finds the call already ended: the real one is lost.
    status = _fake_status(grpc.StatusCode.INTERNAL, "Internal error from Core")
    error = classify_rpc_error(status, PEER)
    assert type(error) is RelayUnavailable
    assert error.retryable


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        (grpc.StatusCode.INTERNAL, "relay failed", RelayCallFailed),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad job id", JobRejected),
    ],
)
def test_statuses_that_relay_chose_are_not_retried(
    code: grpc.StatusCode, details: str, expected: type[RelayCallFailed]
) -> None:
    error = classify_rpc_error(_fake_status(code, details), PEER)
    assert type(error) is expected
    assert not error.retryable
