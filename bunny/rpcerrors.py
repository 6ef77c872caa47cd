"""A failed call to relay, as bunny's typed error: the gRPC status (or a stream's per-job
error) decides the class, and the class decides whether a retry can help."""

from __future__ import annotations

import re

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bunny.errors import (
    JobDeadlineExceeded,
    JobRejected,
    RelayCallFailed,
    RelayOverloaded,
    RelayTlsFailed,
    RelayUnavailable,
)
from bunny.relaypool import MAX_ANSWER_BYTES
from bunnyrelay.v1 import jobs_pb2

_PUSHBACK_KEY = "grpc-retry-pushback-ms"
_REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# How gRPC's channel reports a certificate that failed bunny's own checks.
_TLS_FAILURES = (
    "Hostname Verification Check failed",
    "CERTIFICATE_VERIFY_FAILED",
    "handshake failed",
)
# grpc.aio's own status for a stream whose write failed because the call had already
# ended underneath it (a reset connection, a relay that stopped): the real status is lost.
_WRITE_FAILED_IN_CORE = "Internal error from Core"


# gRPC's own refusal of a message over a side's receive limit; the side is named in
# grpcio 1.85 and may be missing elsewhere.
_TOO_LARGE = re.compile(
    r"(?:(?P<side>SERVER|CLIENT): )?"
    r"Received message larger than max \((?P<size>\d+) vs\. (?P<limit>\d+)\)"
)
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
"""relay's reason for a payload over its limit, also given to gRPC's refusal of one."""


def _too_large(details: str, peer: str) -> str | None:
    """gRPC's "Received message larger than max (X vs. Y)" in words: who refused what, and
    what to do; None for any other message."""
    found = _TOO_LARGE.search(details)
    if found is None:
        return None
    size, limit = int(found["size"]), int(found["limit"])
    if found["side"] == "CLIENT" or limit == MAX_ANSWER_BYTES:
        return (
            f"{peer}: RESOURCE_EXHAUSTED: relay's answer is {size} bytes, more than bunny "
            f"takes in one message ({limit} bytes)"
        )
    return (
        f"{peer}: RESOURCE_EXHAUSTED: the job is {size} bytes, more than relay takes in one "
        f"message ({limit} bytes, about twice its largest payload); send a smaller payload, "
        "or start relay with a larger --max-payload-bytes (RELAY_MAX_PAYLOAD_BYTES) and give "
        "bunny's --max-payload-bytes the same"
    )


def _error_reason(exc: grpc.aio.AioRpcError) -> str:
    """relay's ``google.rpc.ErrorInfo`` reason, when the status carries one."""
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return ""
    if status is None:
        return ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def _pushback_seconds(exc: grpc.aio.AioRpcError) -> float | None:
    """``grpc-retry-pushback-ms`` from the trailers; a negative value means "do not retry"."""
    for key, value in exc.trailing_metadata() or ():
        if key == _PUSHBACK_KEY:
            try:
                return int(value) / 1000.0
            except (TypeError, ValueError):
                return None
    return None


def _call_broke(code: grpc.StatusCode, details: str) -> bool:
    """The call was cut off, not refused: the job may well succeed on another try.

    bunny never cancels a call it still waits for (a cancelled caller gets
    CancelledError, not a status), so CANCELLED comes from the other side: a
    grpc.aio server cancels the calls that reach it while it stops (grpc/grpc#41785),
    which is what every relay does at the end of its drain.
    """
    return code is grpc.StatusCode.CANCELLED or (
        code is grpc.StatusCode.INTERNAL and details == _WRITE_FAILED_IN_CORE
    )


def classify_rpc_error(exc: grpc.aio.AioRpcError, peer: str) -> RelayCallFailed:
    """Turn a failed call into bunny's typed error; retryability follows from the type."""
    code = exc.code()
    details = exc.details() or code.name
    message = f"{peer}: {code.name}: {details}"
    reason = _error_reason(exc)
    if _call_broke(code, details):
        return RelayUnavailable(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.UNAVAILABLE:
        if any(marker in details for marker in _TLS_FAILURES):
            return RelayTlsFailed(message, code=code, peer=peer, reason=reason)
        return RelayUnavailable(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        too_large = _too_large(details, peer)
        if too_large is not None:
            return JobRejected(too_large, code=code, peer=peer, reason=PAYLOAD_TOO_LARGE)
        pushback = _pushback_seconds(exc)
        if pushback is not None and pushback >= 0:
            return RelayOverloaded(
                message, code=code, peer=peer, reason=reason, pushback_s=pushback
            )
        return JobRejected(message, code=code, peer=peer, reason=reason)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return JobDeadlineExceeded(message, code=code, peer=peer, reason=reason)
    if code in _REJECTED:
        return JobRejected(message, code=code, peer=peer, reason=reason)
    return RelayCallFailed(message, code=code, peer=peer, reason=reason)


_CODE_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}
# Reasons relay gives for a job its handler ran: results on Run too, never statuses.
_RAN_AND_FAILED = frozenset({"JOB_FAILED", "INVALID_PAYLOAD", "HANDLER_ERROR"})
_REJECTED_ON_STREAM = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def raise_for_stream_error(result: jobs_pb2.JobResult, peer: str) -> None:
    """Raise the typed error for a job a stream turned away (as Run would have with a status).

    A job that ran and failed is a result, not an error, and passes through.
    """
    if result.status != jobs_pb2.JOB_STATUS_FAILED:
        return
    error = result.error
    if error.reason in _RAN_AND_FAILED:
        return
    try:
        code = grpc.StatusCode[_CODE_NAMES[error.code]]
    except KeyError:
        return
    message = f"{peer}: {code.name}: {error.message}"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.retryable:
        pushback = (
            error.retry_after.ToTimedelta().total_seconds()
            if error.HasField("retry_after")
            else None
        )
        raise RelayOverloaded(
            message, code=code, peer=peer, reason=error.reason, pushback_s=pushback
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        raise RelayUnavailable(message, code=code, peer=peer, reason=error.reason)
    if code in _REJECTED_ON_STREAM:
        raise JobRejected(message, code=code, peer=peer, reason=error.reason)
