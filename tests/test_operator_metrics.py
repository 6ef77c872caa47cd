"""The metrics the dashboards and alerts read arrive over OTLP from the real processes.

A real relay and the real bunny command export to the lab's OTLP receiver as they
would to a Collector (tests/e2e/test_compose_stack.py has the real Collector).
"""

from __future__ import annotations

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink
from lab.processes import run_bunny
from tests.conftest import RELAY_NAME, StartRelay


async def test_bunny_and_relay_export_the_operator_metrics(
    zone: ZoneServer, sink: OtlpSink, start_relay: StartRelay
) -> None:
    async with start_relay(args=["--max-in-flight", "7"]) as relay:
        zone.set_records(RELAY_NAME, "A", ["127.0.0.1"])
        code, _, err = await run_bunny(
            "submit",
            "--target",
            f"{RELAY_NAME}:{relay.port}",
            "--nameserver",
            str(zone.address),
            "--count",
            "3",
            "--json",
            env=sink.env("bunny"),
        )
        assert code == 0, err
        code, _, err = await run_bunny(
            "submit",
            "--target",
            f"missing.private.aws.internal:{relay.port}",
            "--nameserver",
            str(zone.address),
            "--json",
            env=sink.env("bunny"),
        )
        assert code != 0
        await sink.wait_for_points(lambda: sink.latest("bunnyrelay.relay.ready") is not None)
        ready = sink.latest("bunnyrelay.relay.ready")
        limit = sink.latest("bunnyrelay.relay.jobs.limit")
        assert await relay.terminate() == 0  # relay flushes its metrics as it drains

    assert ready is not None
    assert ready.value == 1
    assert limit is not None
    assert limit.value == 7
    assert sink.latest("bunnyrelay.relay.jobs.in_flight") is not None
    reserve = sink.latest(
        "db.client.operation.duration",
        {"db.system.name": "sqlite", "db.operation.name": "reserve"},
    )
    assert reserve is not None
    assert (reserve.count, reserve.unit) == (3, "s")
    answered = sink.latest(
        "bunnyrelay.dns.lookups",
        {
            "bunnyrelay.dns.outcome": "answered",
            "bunnyrelay.dns.rcode": "NOERROR",
            "bunnyrelay.dns.nameserver": str(zone.address),
        },
    )
    assert answered is not None
    assert answered.service == "bunny"
    failed = sink.latest(
        "bunnyrelay.dns.lookups",
        {"bunnyrelay.dns.outcome": "failed", "bunnyrelay.dns.rcode": "NXDOMAIN"},
    )
    assert failed is not None
    assert failed.attributes["error.type"] == "NameNotFound"
    queries = sink.latest("bunnyrelay.dns.lookup.queries")
    assert queries is not None
    assert queries.count >= 1
    attempts = sink.latest(
        "bunnyrelay.job.attempts",
        {"bunnyrelay.job.kind": "echo", "bunnyrelay.job.status": "SUCCEEDED"},
    )
    assert attempts is not None
    assert attempts.value == 3
    # The per-call histograms, recorded on the hot path and merged into the export.
    served = sink.latest("rpc.server.duration", {"rpc.method": "Run", "rpc.grpc.status_code": 0})
    sent = sink.latest("rpc.client.duration", {"rpc.method": "Run", "rpc.grpc.status_code": 0})
    jobs = sink.latest("bunnyrelay.job.duration", {"bunnyrelay.job.status": "SUCCEEDED"})
    for point, service, unit in (
        (served, "relay", "ms"),
        (sent, "bunny", "ms"),
        (jobs, "bunny", "s"),
    ):
        assert point is not None
        assert (point.count, point.service, point.unit) == (3, service, unit)
