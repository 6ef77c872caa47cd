"""The lab's OTLP receiver answers OTLP/HTTP as a collector would, so that exporters pointed
at it behave as they do in production."""

from __future__ import annotations

import asyncio
import gzip
import urllib.error
import urllib.request

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from lab.otlpsink import OtlpSink


def _post(url: str, body: bytes, **headers: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def _request(name: str) -> bytes:
    span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name)
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
async def test_a_trace_request_is_kept_as_sent(sink: OtlpSink, encoding: str) -> None:
    body = _request("job")
    sent = gzip.compress(body) if encoding == "gzip" else body
    status = await asyncio.to_thread(
        _post,
        f"{sink.http_endpoint}/v1/traces",
        sent,
        **{"Content-Type": "application/x-protobuf", "Content-Encoding": encoding},
    )
    assert status == 200
    assert [request.SerializeToString() for request in sink.requests] == [body]
    assert [span.name for span in sink.spans] == ["job"]


async def test_what_is_not_an_otlp_request_is_refused(sink: OtlpSink) -> None:
    assert await asyncio.to_thread(_post, f"{sink.http_endpoint}/v1/traces", b"\xff\xff") == 400
    assert await asyncio.to_thread(_post, f"{sink.http_endpoint}/v1/logs", _request("x")) == 404
    assert sink.requests == []
