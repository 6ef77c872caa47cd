"""The working pair end to end: real relay processes, the real bunny command, real DNS and OTLP.

These tests read as what a user sees: the JSON lines bunny prints, its exit
status, and the trace that lands in an OTLP receiver.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink, SinkSpan
from lab.processes import relay_process, run_bunny
from tests.conftest import RELAY_NAME, StartRelay
from tests.relaylog import log_events, wait_for_event


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


async def _submit(
    zone: ZoneServer, port: int, *args: str, sink: OtlpSink | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = await run_bunny(
        "submit",
        "--target",
        f"{RELAY_NAME}:{port}",
        "--nameserver",
        str(zone.address),
        "--json",
        *args,
        env=sink.env("bunny") if sink is not None else None,
    )
    return code, _lines(out), err


def _by_name(spans: list[SinkSpan], service: str, name: str) -> list[SinkSpan]:
    return [s for s in spans if s.service == service and s.name == name]


def _has_relay_job_span(trace_id: str) -> Any:
    def check(spans: list[SinkSpan]) -> bool:
        ours = [s for s in spans if s.trace_id == trace_id]
        return any(s.service == "relay" and s.name.startswith("job ") for s in ours) and any(
            s.service == "bunny" and s.name == "job.submit" for s in ours
        )

    return check


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_one_trace_joins_bunny_lookup_rpc_and_relay_job(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay, stream: bool
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"], ttl=30)
        extra = ["--stream"] if stream else []
        code, lines, err = await _submit(
            zone,
            relay.port,
            "--kind",
            "echo",
            "--payload",
            "hi",
            "--family",
            "ipv4",
            *extra,
            sink=sink,
        )
        assert code == 0, err
        (line,) = lines
        assert line["status"] == "SUCCEEDED"
        assert line["output"] == "hi"
        assert line["relay_address"] == f"127.0.0.1:{relay.port}"
        trace_id = line["trace_id"]
        await sink.wait_for(_has_relay_job_span(trace_id))

    spans = sink.trace(trace_id)
    method = "RunBatches" if stream else "Run"
    (root,) = _by_name(spans, "bunny", "job.submit")
    (lookup,) = _by_name(spans, "bunny", "dns.lookup")
    queries = _by_name(spans, "bunny", "dns.query")
    (client,) = _by_name(spans, "bunny", f"bunnyrelay.v1.JobService/{method}")
    (server,) = _by_name(spans, "relay", f"bunnyrelay.v1.JobService/{method}")
    (job,) = [s for s in spans if s.service == "relay" and s.name == "job echo"]

    # The tree, edge by edge, across both services in one trace.
    assert root.parent_id == ""
    assert lookup.parent_id == root.span_id
    # One query answered the lookup: it is told on the lookup span, not a child of it.
    assert queries == []
    assert client.parent_id == root.span_id
    assert server.parent_id == client.span_id
    assert job.parent_id == server.span_id

    assert lookup.attributes["dns.question.name"] == RELAY_NAME
    assert lookup.attributes["dns.answers"] == ["127.0.0.1"]
    assert lookup.attributes["bunnyrelay.dns.nameserver"] == str(zone.address)
    assert lookup.attributes["bunnyrelay.dns.rcode"] == "NOERROR"
    assert client.kind == "CLIENT"
    assert client.attributes["rpc.system"] == "grpc"
    assert client.attributes["rpc.method"] == method
    assert client.attributes["server.address"] == RELAY_NAME
    assert client.attributes["network.peer.address"] == "127.0.0.1"
    assert client.attributes["rpc.grpc.status_code"] == 0
    assert server.kind == "SERVER"
    assert job.attributes["bunnyrelay.job.id"] == line["job_id"]


async def test_jobs_spread_over_every_address_the_name_has(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with (
        start_relay("127.0.0.1:0") as relay_a,
        start_relay(f"127.0.0.2:{relay_a.port}") as relay_b,
    ):
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1", "127.0.0.2"], ttl=30)
        code, lines, err = await _submit(
            zone, relay_a.port, "--count", "20", "--concurrency", "4", "--family", "ipv4"
        )
    assert code == 0, err
    served = {line["relay_address"] for line in lines}
    assert served == {f"127.0.0.1:{relay_a.port}", f"127.0.0.2:{relay_b.port}"}


async def test_resubmitting_the_same_job_ids_replays_results_without_running_again(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        args = ("--kind", "sha256", "--payload", "abc", "--count", "3", "--job-id", "batch-7")
        code1, first, _ = await _submit(zone, relay.port, *args)
        code2, second, _ = await _submit(zone, relay.port, *args)
        code3, conflict, _ = await _submit(
            zone, relay.port, "--kind", "sha256", "--payload", "other", "--job-id", "batch-7-1"
        )
    assert (code1, code2) == (0, 0)
    assert sorted(line["job_id"] for line in first) == ["batch-7-1", "batch-7-2", "batch-7-3"]
    assert {line["output"] for line in first} == {
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    }
    assert not any(line["replayed"] for line in first)
    assert all(line["replayed"] for line in second)
    assert {line["output"] for line in second} == {line["output"] for line in first}
    assert code3 == 1
    assert conflict[0]["error"]["code"] == "ALREADY_EXISTS"


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["unary", "stream"])
async def test_a_failed_job_is_reported_the_same_way_and_sets_the_exit_status(
    zone: ZoneServer, start_relay: StartRelay, mode: list[str]
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, lines, _ = await _submit(
            zone, relay.port, "--kind", "fail", "--payload", "boom", *mode
        )
        unknown_code, unknown, _ = await _submit(zone, relay.port, "--kind", "teleport", *mode)
    assert code == 1
    assert lines[0]["status"] == "FAILED"
    assert lines[0]["error"]["type"] == "JobFailed"
    assert lines[0]["error"]["message"] == "boom"
    assert lines[0]["error"]["reason"] == "JOB_FAILED"
    assert unknown_code == 1
    assert unknown[0]["error"]["type"] == "JobRejected"
    assert unknown[0]["attempts"] == 1, "a rejected job must not be retried"
    assert "echo" in unknown[0]["error"]["message"], "the error lists the kinds relay knows"


async def test_overloaded_relay_pushes_back_and_bunny_retries_until_every_job_succeeds(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with start_relay(args=["--max-in-flight", "1"]) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, lines, err = await _submit(
            zone,
            relay.port,
            "--kind",
            "sleep",
            "--payload",
            "100",
            "--count",
            "4",
            "--concurrency",
            "4",
        )
    assert code == 0, err
    assert len(lines) == 4
    assert any(line["attempts"] > 1 for line in lines), "some jobs must have been pushed back"


async def test_lookup_failure_is_a_typed_error_naming_the_name_and_nameserver(
    zone: ZoneServer,
) -> None:
    code, lines, _ = await _submit(zone, 50051, "--family", "ipv4")
    assert code == 1
    (line,) = lines
    assert line["status"] == "FAILED"
    assert line["attempts"] == 0
    assert line["error"]["type"] == "NameNotFound"
    assert RELAY_NAME in line["error"]["message"]
    assert str(zone.address) in line["error"]["message"]
    assert "missing from the zone" in line["error"]["likely_cause"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["submit"], {}, "--target"),
        (["submit", "--target", "relay..internal:1"], {}, "label"),
        (["submit", "--target", "relay:50051", "--nameserver", "dns.example"], {}, "IP address"),
        (["submit", "--target", "relay:50051"], {"BUNNY_COUNT": "lots"}, "BUNNY_COUNT"),
        (["submit", "--target", "relay:50051", "--concurrency", "0"], {}, "at least 1"),
        (
            ["submit", "--target", "relay:50051", "--resolv-conf", "/nonexistent/resolv.conf"],
            {},
            "/nonexistent/resolv.conf",
        ),
        (["resolve", "relay", "--ndots", "99"], {}, "ndots"),
    ],
)
async def test_bad_input_exits_2_with_a_message_that_says_what_was_wrong(
    args: list[str], env: dict[str, str], message: str
) -> None:
    code, out, err = await run_bunny(*args, env=env)
    assert code == 2, (out, err)
    assert message in err
    assert "Traceback" not in err


async def test_resolve_command_shows_every_query_and_the_answer(zone: ZoneServer) -> None:
    zone.set_records(RELAY_NAME, "A", ["127.0.0.7"], ttl=42)
    code, out, err = await run_bunny(
        "resolve", RELAY_NAME, "--nameserver", str(zone.address), "--family", "ipv4", "--json"
    )
    assert code == 0, err
    answer = json.loads(out)
    assert answer["addresses"] == ["127.0.0.7"]
    assert answer["source"] == "wire"
    assert 0 < answer["ttl"] <= 42
    (query,) = answer["queries"]
    assert query["fqdn"].rstrip(".") == RELAY_NAME
    assert query["rcode"] == "NOERROR"
    assert query["nameserver"] == str(zone.address)


async def test_relay_drain_on_sigterm_loses_no_job_and_moves_new_ones_to_the_other_replica(
    zone: ZoneServer, start_relay: StartRelay, tmp_path: Path
) -> None:
    args = ["--kind", "sleep", "--payload", "300", "--count", "24", "--concurrency", "8"]
    # DEBUG for relay's job.started lines, which tell when jobs are in flight.
    logs = ["--log-format", "json", "--log-level", "DEBUG"]
    log_a, log_b = tmp_path / "relay-a.log", tmp_path / "relay-b.log"
    async with (
        start_relay("127.0.0.1:0", args=logs, log_path=log_a) as relay_a,
        start_relay(f"127.0.0.2:{relay_a.port}", args=logs, log_path=log_b) as relay_b,
    ):
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1", "127.0.0.2"], ttl=30)
        submit = asyncio.create_task(_submit(zone, relay_a.port, *args, "--family", "ipv4"))
        # bunny is mid-batch: jobs in flight on both replicas.
        await wait_for_event(log_a, "job.started")
        await wait_for_event(log_b, "job.started")
        exit_code = await relay_a.terminate(timeout=20)
        code, lines, err = await submit
    (drain,) = log_events(log_a, "relay.drain.begin")
    assert drain["in_flight"] > 0
    assert exit_code == 0
    assert code == 0, err
    assert len(lines) == 24
    assert all(line["status"] == "SUCCEEDED" for line in lines)
    late = [line for line in lines if line["attempts"] > 1]
    assert all(line["relay_address"] == f"127.0.0.2:{relay_b.port}" for line in late)


async def test_both_processes_export_their_metrics_by_otlp(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, _, err = await _submit(zone, relay.port, "--count", "3", sink=sink)
        assert code == 0, err
        assert await relay.terminate() == 0  # relay flushes its metrics as it drains
    expected = {
        "dns.lookup.duration",
        "rpc.client.duration",
        "rpc.server.duration",
        "bunnyrelay.jobs",
    }
    assert expected <= sink.metric_names


async def test_a_lookup_that_fails_for_now_is_retried_with_the_job_not_reported_as_final(
    zone: ZoneServer, start_relay: StartRelay
) -> None:
    async with start_relay() as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        # Both of the resolver's own attempts get SERVFAIL; the job's retry asks again.
        zone.answer_with_rcode("SERVFAIL", next_n=2)
        code, lines, err = await _submit(zone, relay.port, "--family", "ipv4")
    assert code == 0, err
    (line,) = lines
    assert line["status"] == "SUCCEEDED"
    assert line["attempts"] == 1, "one call to relay: the retries were lookups"
    servfails = zone.queries(RELAY_NAME, "A", outcome="SERVFAIL")
    assert len(servfails) == 2


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["unary", "stream"])
async def test_with_sampling_off_relay_still_logs_each_jobs_trace_id(
    zone: ZoneServer, sink: OtlpSink, tmp_path: Path, mode: list[str]
) -> None:
    # No span is recorded anywhere, yet the trace id bunny reports for a job is the one
    # relay's log line for that job carries: W3C context goes out unsampled.
    zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
    log = tmp_path / "relay.log"
    off = {"OTEL_TRACES_SAMPLER": "always_off"}
    async with relay_process(
        "127.0.0.1:0",
        args=["--store", "memory", "--log-format", "json", "--log-executions"],
        env={**sink.env("relay"), **off},
        log_path=log,
    ) as relay:
        code, out, err = await run_bunny(
            "submit",
            "--target",
            f"{RELAY_NAME}:{relay.port}",
            "--nameserver",
            str(zone.address),
            "--json",
            "--count",
            "3",
            *mode,
            env={**sink.env("bunny"), **off},
        )
    assert code == 0, err
    reported = {line["job_id"]: line["trace_id"] for line in _lines(out)}
    logged = {
        entry["job_id"]: entry["trace_id"]
        for entry in map(json.loads, log.read_text().splitlines())
        if entry.get("event") == "job.executed"
    }
    assert logged == reported
    assert len(set(reported.values())) == 3, "each job is its own trace"
    assert not sink.spans
