"""The error tree: each refusal carries its code, reason and retryability to the caller."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bunnyrelay.v1.jobs_pb2 import JobStatus
from relay.errors import (
    ERROR_DOMAIN,
    PUSHBACK_KEY,
    Draining,
    IdConflict,
    ListenError,
    Overloaded,
    Refused,
    RelayError,
    StartupError,
    StoreError,
    TlsError,
)


def test_a_refusal_becomes_a_rich_status_with_pushback() -> None:
    refusal = Overloaded.of(in_flight=4, limit=4, retry_after_ms=1250)
    metadata = dict(refusal.trailing_metadata())
    assert metadata[PUSHBACK_KEY] == "1250"

    status = rpc_status.from_call(_FakeCall(refusal))
    assert status is not None
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(retry)
    assert (info.reason, info.domain) == ("OVERLOADED", ERROR_DOMAIN)
    assert retry.retry_delay.ToMilliseconds() == 1250


def test_a_refusal_inside_a_stream_becomes_the_jobs_failed_result() -> None:
    result = IdConflict.of("j-1").job_result("j-1", "relay-0")
    assert result.status == JobStatus.JOB_STATUS_FAILED
    assert result.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert (result.error.reason, result.error.retryable) == ("JOB_ID_REUSED", False)
    assert result.relay_instance == "relay-0"
    assert Draining().job_error().retryable


def test_start_up_failures_share_a_base_and_each_names_its_log_event() -> None:
    assert {cls.event for cls in (ListenError, TlsError, StoreError)} == {
        "relay.listen_failed",
        "relay.tls_failed",
        "relay.store_failed",
    }
    for cls in (Refused, StartupError):
        assert issubclass(cls, RelayError)


class _FakeCall:
    """What rpc_status.from_call reads from a finished call, made from a refusal."""

    def __init__(self, refusal: Refused) -> None:
        self._refusal = refusal

    def code(self) -> grpc.StatusCode:
        return self._refusal.code

    def details(self) -> str:
        return self._refusal.message

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._refusal.trailing_metadata()
