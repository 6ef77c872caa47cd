"""Which failed calls bunny retries: the status a call ended with, turned into bunny's error.

The statuses are built here as grpc.aio reports them (a fake of the error object
only); tests/faults/test_fault_suite.py meets the same statuses for real, from a
relay stopping at the end of its drain and from streams cut by a reset connection.
"""

from __future__ import annotations

import grpc
import pytest

from bunny.errors import JobRejected, RelayCallFailed, RelayUnavailable
from bunny.relaypool import MAX_ANSWER_BYTES
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


@pytest.mark.parametrize(
    ("details", "said"),
    [
        (
            "SERVER: Received message larger than max (3000049 vs. 2162688)",
            "the job is 3000049 bytes, more than relay takes in one message (2162688 bytes",
        ),
        (
            "Received message larger than max (3000049 vs. 2162688)",
            "the job is 3000049 bytes, more than relay takes in one message (2162688 bytes",
        ),
        (
            f"CLIENT: Received message larger than max (300000000 vs. {MAX_ANSWER_BYTES})",
            f"relay's answer is 300000000 bytes, more than bunny takes in one message "
            f"({MAX_ANSWER_BYTES} bytes)",
        ),
        (
            f"Received message larger than max (300000000 vs. {MAX_ANSWER_BYTES})",
            "relay's answer is 300000000 bytes",
        ),
    ],
    ids=["relay", "relay-unnamed", "bunny", "bunny-unnamed"],
)
def test_a_message_over_a_receive_limit_names_both_sizes_and_who_refused_it(
    details: str, said: str
) -> None:
    error = classify_rpc_error(_fake_status(grpc.StatusCode.RESOURCE_EXHAUSTED, details), PEER)

    assert type(error) is JobRejected
    assert not error.retryable
    assert error.reason == "PAYLOAD_TOO_LARGE"
    assert said in str(error)
    assert "larger than max" not in str(error)
