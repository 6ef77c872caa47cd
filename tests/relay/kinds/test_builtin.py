"""The built-in kinds, called as relay calls them."""

from __future__ import annotations

import pytest

from relay.kinds.handler import InvalidPayload, JobFailed, JobInput
from relay.kinds.registry import Registry

KINDS = Registry.builtin()


async def _run(kind: str, payload: bytes) -> bytes:
    handler = KINDS.get(kind)
    assert handler is not None
    return await handler(JobInput(job_id="k-1", kind=kind, payload=payload, attributes={}))


async def test_echo_sha256_and_sleep_return_their_output() -> None:
    assert await _run("echo", b"\x00bytes") == b"\x00bytes"
    assert await _run("sha256", b"") == (
        b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert await _run("sleep", b" 1\n") == b"slept 1 ms"


@pytest.mark.parametrize("payload", [b"", b"-5", b"+5", b"1e3", b"1_000", b"abc", "٣".encode()])
async def test_sleep_rejects_a_payload_that_is_not_ascii_milliseconds(payload: bytes) -> None:
    with pytest.raises(InvalidPayload, match="whole number of milliseconds"):
        await _run("sleep", payload)


async def test_sleep_is_capped_at_ten_minutes() -> None:
    with pytest.raises(InvalidPayload, match="limited to 600000 ms"):
        await _run("sleep", b"600001")


async def test_fail_fails_with_the_payload_as_message() -> None:
    with pytest.raises(JobFailed, match=r"^out of paper$") as failed:
        await _run("fail", b"out of paper")
    assert (failed.value.reason, failed.value.retryable) == ("JOB_FAILED", False)
