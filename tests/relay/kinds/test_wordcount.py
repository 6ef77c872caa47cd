"""``wordcount``, the kind with a typed payload: its messages through a real relay, its checks."""

from __future__ import annotations

import grpc
import pytest

from bunnyrelay.v1.jobs_pb2 import JobStatus
from bunnyrelay.v1.wordcount_pb2 import WordCountRequest, WordCountResult
from tests.relay.harness import job, local_relay


async def test_a_wordcount_request_gets_its_counts_back_as_a_wordcount_result() -> None:
    request = WordCountRequest(text="the cat and THE hat and the bat", top=2)
    async with local_relay() as local:
        result = await local.stub.Run(job("wc-1", "wordcount", request.SerializeToString()))

    assert result.status == JobStatus.JOB_STATUS_SUCCEEDED
    counted = WordCountResult.FromString(result.output)
    assert (counted.words, counted.distinct) == (8, 5)
    assert [(w.word, w.count) for w in counted.most_common] == [("the", 3), ("and", 2)]


async def test_words_as_frequent_as_each_other_are_listed_alphabetically() -> None:
    request = WordCountRequest(text="b a c", top=3)
    async with local_relay() as local:
        result = await local.stub.Run(job("wc-2", "wordcount", request.SerializeToString()))
    counted = WordCountResult.FromString(result.output)
    assert [w.word for w in counted.most_common] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # Field 1 (text) as a length-delimited value holding bytes that are not UTF-8.
        (
            b"\x0a\x02\xff\xfe",
            "expects its payload to be a serialized bunnyrelay.v1.WordCountRequest",
        ),
        (b"\x0a\x05ab", "expects its payload to be a serialized bunnyrelay.v1.WordCountRequest"),
        (WordCountRequest(text="a", top=101).SerializeToString(), "at most 100 words; top is 101"),
    ],
    ids=["not-utf8", "truncated", "top-too-large"],
)
async def test_a_payload_that_is_not_a_valid_request_fails_the_job_as_invalid_payload(
    payload: bytes, message: str
) -> None:
    async with local_relay() as local:
        result = await local.stub.Run(job("wc-bad", "wordcount", payload))

    assert result.status == JobStatus.JOB_STATUS_FAILED
    assert result.error.reason == "INVALID_PAYLOAD"
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not result.error.retryable
    assert message in result.error.message


async def test_an_empty_payload_is_an_empty_text() -> None:
    async with local_relay() as local:
        result = await local.stub.Run(job("wc-empty", "wordcount", b""))
    assert WordCountResult.FromString(result.output) == WordCountResult()
