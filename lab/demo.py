"""``make demo``: the main job, end to end, on this machine, with nothing else running.

1. An OTLP receiver (the stand-in for an OpenTelemetry Collector) on loopback.
2. A DNS server on loopback, authoritative for ``private.aws.internal`` (the
   Route 53 private zone's role) with two A records for relay.
3. Two relay processes, one per address, exporting their spans by OTLP.
4. bunny, with a resolv.conf like a Kubernetes pod's (search list, ndots:5),
   sends a batch of jobs to ``relay.private.aws.internal``.
5. One more job, to a name the zone does not have: a failure, as a user sees it.
6. The waterfall of the first job's trace (its cold lookup shows what ndots:5
   costs), and a summary of all jobs.
7. ``.demo/report.html``: the run's key panels, from the metrics bunny and relay
   exported in it (:mod:`lab.report`), for a look without Grafana.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from lab.dnsserver import ZoneServer
from lab.otlpsink import OtlpSink, SinkSpan
from lab.processes import relay_process, run_bunny
from lab.report import render as render_report
from lab.waterfall import render

RELAY_NAME = "relay.private.aws.internal"
ZONE = "private.aws.internal"
RELAY_ADDRESSES = ("127.0.0.1", "127.0.0.2")
JOBS = 24
STATE_DIR = Path(".demo")
REPORT = STATE_DIR / "report.html"


def _resolv_conf(dns_port: int) -> Path:
    STATE_DIR.mkdir(exist_ok=True)
    path = STATE_DIR / "resolv.conf"
    path.write_text(
        "# Like a pod's resolv.conf in AKS, pointing at the lab's DNS server.\n"
        f"nameserver 127.0.0.1:{dns_port}\n"
        "search demo.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5 timeout:1 attempts:2\n"
    )
    return path


def _cold_trace(spans: list[SinkSpan]) -> str | None:
    """The trace of a job whose own lookup went to the wire, once relay's spans are in too.

    Jobs that asked while that lookup was running joined it (their lookup span
    links to it), so their traces have no queries of their own.
    """
    traced = {s.trace_id for s in spans if s.service == "bunny" and s.name == "dns.query"}
    for trace_id in traced:
        if any(s.trace_id == trace_id and s.service == "relay" for s in spans):
            return trace_id
    return None


def _summary(outcomes: list[dict[str, object]]) -> str:
    by_status = Counter(str(o["status"]) for o in outcomes)
    by_relay = Counter(f"{o['relay_instance']} at {o['relay_address']}" for o in outcomes)
    durations = sorted(float(str(o["duration_ms"])) for o in outcomes)
    retried = sum(1 for o in outcomes if int(str(o["attempts"])) > 1)
    sources = Counter(str(o["dns_source"]) for o in outcomes)
    lines = [
        f"jobs: {len(outcomes)}   " + "   ".join(f"{k}: {v}" for k, v in sorted(by_status.items())),
        "served by: " + ", ".join(f"{v} by {k}" for k, v in sorted(by_relay.items())),
        f"latency: p50 {statistics.median(durations):.1f} ms, "
        f"max {durations[-1]:.1f} ms; jobs that needed a retry: {retried}",
        "DNS answers: " + ", ".join(f"{v} from {k}" for k, v in sorted(sources.items())),
    ]
    return "\n".join(lines)


async def demo() -> int:
    async with OtlpSink() as sink, ZoneServer(zone=ZONE) as dns:
        print(f"OTLP receiver on {sink.endpoint}; DNS for {ZONE} on {dns.address}")
        async with (
            relay_process(
                f"{RELAY_ADDRESSES[0]}:0",
                args=["--instance-name", "relay-a"],
                env=sink.env("relay"),
                log_path=STATE_DIR / "relay-a.log",
            ) as relay_a,
            relay_process(
                f"{RELAY_ADDRESSES[1]}:{relay_a.port}",
                args=["--instance-name", "relay-b"],
                env=sink.env("relay"),
                log_path=STATE_DIR / "relay-b.log",
            ) as relay_b,
        ):
            port = relay_a.port
            dns.set_records(RELAY_NAME, "A", list(RELAY_ADDRESSES), ttl=30)
            print(f"relay-a on {relay_a.host}:{port}, relay-b on {relay_b.host}:{port}")
            resolv_conf = _resolv_conf(dns.port)
            code, out, err = await run_bunny(
                "submit",
                "--target",
                f"{RELAY_NAME}:{port}",
                "--resolv-conf",
                str(resolv_conf),
                "--kind",
                "sha256",
                "--payload",
                "hello from AKS",
                "--count",
                str(JOBS),
                "--concurrency",
                "6",
                "--json",
                env=sink.env("bunny"),
            )
            outcomes = [json.loads(line) for line in out.splitlines() if line.strip()]
            if code != 0 or len(outcomes) != JOBS:
                print(out, err, sep="\n", file=sys.stderr)
                print(f"bunny exited with {code} and reported {len(outcomes)} of {JOBS} jobs")
                return 1
            missing, _, _ = await run_bunny(
                "submit",
                "--target",
                f"missing.{ZONE}:{port}",
                "--resolv-conf",
                str(resolv_conf),
                "--json",
                env=sink.env("bunny"),
            )
            if missing == 0:
                print(f"a job to missing.{ZONE} succeeded: it should have failed, NXDOMAIN")
                return 1
            # SIGTERM: relay drains and flushes its telemetry before it exits.
            codes = await asyncio.gather(relay_a.terminate(), relay_b.terminate())

        spans = await sink.wait_for(lambda spans: _cold_trace(spans) is not None, timeout=15)
        trace_id = _cold_trace(spans) or ""
        cold = next(o for o in outcomes if o["trace_id"] == trace_id)

    print()
    print(f"One job's trace (job {cold['job_id']}, the one whose lookup went to the wire):")
    print(render(sink.trace(trace_id)))
    queries = [s for s in sink.trace(trace_id) if s.name == "dns.query"]
    wasted = [q for q in queries if q.attributes.get("bunnyrelay.dns.rcode") == "NXDOMAIN"]
    print()
    print(
        f"That lookup sent {len(queries)} queries; {len(wasted)} were NXDOMAIN answers for "
        "search-list names that ndots:5 tried first. A trailing dot "
        f"({RELAY_NAME}.) or --ndots 3 sends exactly one per address family."
    )
    print()
    print(_summary(outcomes))
    print(f"relay exit codes after SIGTERM (drain): {codes}; relay logs in {STATE_DIR}/")
    REPORT.write_text(
        render_report(
            sink.series(),
            title="bunny/relay: make demo",
            note=f"{JOBS} jobs to {RELAY_NAME} through two relays, and one to a name that "
            "does not exist, from this run's own metrics.",
        )
    )
    print(f"the run's key panels, from its own metrics: {REPORT.resolve()}")
    return 0 if all(c == 0 for c in codes) else 1


def main() -> None:
    STATE_DIR.mkdir(exist_ok=True)
    sys.exit(asyncio.run(demo()))


if __name__ == "__main__":
    main()
