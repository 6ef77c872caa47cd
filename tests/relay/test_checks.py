"""Request checks: what makes a request unfit to run, each named, before anything is spent."""

from __future__ import annotations

import pytest

from bunnyrelay.v1.jobs_pb2 import JobBatch, JobRequest
from relay.checks import (
    UNREADABLE,
    UNREADABLE_BATCH,
    RequestChecks,
    parse_batch,
    parse_request,
)
from relay.errors import InvalidRequest, PayloadTooLarge, Refused, UnknownKind
from relay.kinds.echo import echo

CHECKS = RequestChecks({"echo": echo.handler}, max_payload_bytes=8)


def test_bytes_that_are_not_a_request_become_the_unreadable_request() -> None:
    assert parse_request(b"\xff\xff") is UNREADABLE
    assert parse_batch(b"\xff\xff") is UNREADABLE_BATCH
    request = JobRequest(job_id="j-1", kind="echo")
    assert parse_request(request.SerializeToString()) == request
    assert parse_batch(JobBatch(jobs=[request]).SerializeToString()).jobs == [request]


def test_a_request_that_fits_gets_its_kinds_handler() -> None:
    assert CHECKS.handler(JobRequest(job_id="a.B_c:1-2", kind="echo", payload=b"12345678")) is (
        echo.handler
    )


@pytest.mark.parametrize(
    ("request_", "refusal", "reason"),
    [
        (UNREADABLE, InvalidRequest, "UNREADABLE_REQUEST"),
        (JobRequest(kind="echo"), InvalidRequest, "INVALID_JOB_ID"),
        (JobRequest(job_id="has space", kind="echo"), InvalidRequest, "INVALID_JOB_ID"),
        (JobRequest(job_id="x" * 129, kind="echo"), InvalidRequest, "INVALID_JOB_ID"),
        (JobRequest(job_id="j"), InvalidRequest, "MISSING_KIND"),
        (JobRequest(job_id="j", kind="resize"), UnknownKind, "UNKNOWN_KIND"),
        (
            JobRequest(job_id="j", kind="echo", payload=b"123456789"),
            PayloadTooLarge,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
def test_each_problem_is_its_own_refusal(
    request_: JobRequest, refusal: type[Refused], reason: str
) -> None:
    with pytest.raises(refusal) as refused:
        CHECKS.handler(request_)
    assert refused.value.reason == reason
    assert not refused.value.retryable
