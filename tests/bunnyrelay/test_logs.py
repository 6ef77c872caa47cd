"""One named logger per process, one line per event, trace and span ids on every line."""

from __future__ import annotations

import io
import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from bunnyrelay.logs import configure_logging


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_json_line_carries_the_current_span_and_the_extra_fields() -> None:
    stream = io.StringIO()
    log = configure_logging("bunnyrelay.test-json", fmt="json", stream=stream)
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("job")
    context = span.get_span_context()
    with trace.use_span(span, end_on_exit=True):
        log.info("job executed", extra={"event": "job.executed", "job_id": "j-1"})
    log.warning("outside")

    inside, outside = (json.loads(line) for line in _lines(stream))
    assert inside["message"] == "job executed"
    assert inside["logger"] == "bunnyrelay.test-json"
    assert inside["level"] == "INFO"
    assert (inside["event"], inside["job_id"]) == ("job.executed", "j-1")
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["time"].endswith("Z")
    assert (outside["trace_id"], outside["span_id"]) == ("", "")


def test_a_failure_with_its_traceback_stays_one_json_line() -> None:
    stream = io.StringIO()
    log = configure_logging("bunnyrelay.test-exc", fmt="json", stream=stream)
    try:
        raise RuntimeError("store gone")
    except RuntimeError:
        log.exception("job failed")
    (line,) = _lines(stream)
    record = json.loads(line)
    assert "RuntimeError: store gone" in record["exception"]


def test_a_text_line_reads_left_to_right_with_ids_or_dashes() -> None:
    stream = io.StringIO()
    log = configure_logging("bunnyrelay.test-text", level="debug", stream=stream)
    log.debug("relay ready on %s", "127.0.0.1:50051", extra={"event": "relay.ready"})
    (line,) = _lines(stream)
    assert (
        " DEBUG   bunnyrelay.test-text trace_id=- span_id=- relay ready on 127.0.0.1:50051 " in line
    )
    assert line.endswith("event=relay.ready")


def test_configuring_again_replaces_the_handler_and_keeps_lines_out_of_the_root_logger() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("bunnyrelay.test-again", stream=first)
    log = configure_logging("bunnyrelay.test-again", level="warning", stream=second)
    log.info("filtered out")
    log.warning("once")
    assert first.getvalue() == ""
    assert len(_lines(second)) == 1
    assert not log.propagate
