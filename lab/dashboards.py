"""The Grafana dashboards bunny/relay ships, as code: "DNS path" and "Jobs".

Built with grafana-foundation-sdk, whose models are generated from Grafana's own
dashboard schema, and written as JSON into ``deploy/monitoring/dashboards/`` (the
charts ship copies, :mod:`lab.deployfiles`; the compose stack provisions them).
``python -m lab.dashboards`` writes them; ``--check`` only reports the stale ones
and exits 1 if there are any (tests/monitoring fails on a stale one too).

Every query is PromQL over the names the OpenTelemetry Collector's Prometheus
exporter gives bunny's and relay's metrics (``bunnyrelay.dns.lookups`` becomes
``bunnyrelay_dns_lookups_total``); tests/monitoring parses each with promtool and
checks each name against what a real Collector exported in a test run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus, stat, table, text, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import Dashboard, DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.text import TextMode

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_DIR = ROOT / "deploy" / "monitoring" / "dashboards"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# bunny's own count of jobs: relay's count of the jobs it ran carries bunnyrelay_job_replayed.
BUNNY_JOBS = 'bunnyrelay_jobs_total{job=~"$job", bunnyrelay_job_replayed=""}'
RELAY_JOBS = 'bunnyrelay_jobs_total{job=~"$relay", bunnyrelay_job_replayed!=""}'

Panel = Callable[[], Any]


def _query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()


def _legend() -> VizLegendOptions:
    return (
        VizLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _graph(
    title: str, description: str, unit: str, queries: Sequence[tuple[str, str]], *, width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .legend(_legend())
        .span(width)
        .height(8)
    )
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _variables(board: gdash.Dashboard, *services: tuple[str, str, str]) -> gdash.Dashboard:
    board = board.with_variable(
        gdash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )
    for name, label, metric in services:
        board = board.with_variable(
            gdash.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(f"label_values({metric}, job)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
    return board


HOP_GUIDE = """\
bunny asks one nameserver (the cluster DNS); what it answers tells which hop is broken.

- **TIMEOUT**: the cluster DNS, or a hop beyond it, is silent; a timeout at the forwarder
  is the VPN tunnel. Call the VPN's owners, then the AWS network team.
- **SERVFAIL**: the cluster DNS could not get an answer upstream: the forwarder across the
  tunnel, or the AWS resolver. Call the VPN's owners, then the AWS network team.
- **NXDOMAIN**: the record is missing from the private zone (relay's owners), or the
  conditional forward is (the AKS platform team: the coredns-custom ConfigMap).
- **REFUSED**: a resolver's ACL rejects the query: the AWS or Azure network team.
- **UNREACHABLE**: nothing listens at the cluster DNS's address: the AKS platform team.

`bunny diagnose relay.private.aws.internal:50051 --hop cluster-dns=IP --hop forwarder=IP`
asks each hop in turn; docs/alerts.md is the runbook.
"""


def dns_path() -> Dashboard:
    """The DNS path from bunny to relay: lookups, their failures by cause and nameserver,
    stale answers, and what the search list costs."""
    lookups = 'bunnyrelay_dns_lookups_total{job=~"$job"}'
    board = (
        gdash.Dashboard("bunny/relay: DNS path")
        .uid("bunnyrelay-dns-path")
        .description(
            "bunny's lookups of relay across clouds: pod resolv.conf, cluster DNS, forwarder, "
            "VPN tunnel, AWS resolver, private zone."
        )
        .tags(["bunnyrelay", "dns"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    board = _variables(board, ("job", "bunny", "bunnyrelay_dns_lookups_total"))
    board = board.with_row(gdash.Row("Lookups"))
    board = board.with_panel(
        _graph(
            "Lookup latency by name",
            "p50 and p99 of dns.lookup.duration: lookups past bunny's fresh cache.",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, dns_question_name) "
                    f'(rate(dns_lookup_duration_seconds_bucket{{job=~"$job"}}[{RATE}])))',
                    "p99 {{dns_question_name}}",
                ),
                (
                    "histogram_quantile(0.5, sum by (le, dns_question_name) "
                    f'(rate(dns_lookup_duration_seconds_bucket{{job=~"$job"}}[{RATE}])))',
                    "p50 {{dns_question_name}}",
                ),
            ],
        )
    )
    board = board.with_panel(
        _graph(
            "Lookups by outcome",
            "answered, stale (an expired answer served because the refresh failed), failed.",
            "reqps",
            [
                (
                    f"sum by (bunnyrelay_dns_outcome) (rate({lookups}[{RATE}]))",
                    "{{bunnyrelay_dns_outcome}}",
                )
            ],
        )
    )
    board = board.with_row(gdash.Row("Where it breaks"))
    board = board.with_panel(
        _graph(
            "Failures by nameserver and rcode",
            "Lookups that failed or were answered stale, by the nameserver that gave the last "
            "word and its rcode.",
            "reqps",
            [
                (
                    "sum by (bunnyrelay_dns_nameserver, bunnyrelay_dns_rcode) "
                    f'(rate(bunnyrelay_dns_lookups_total{{job=~"$job", '
                    f'bunnyrelay_dns_outcome!="answered"}}[{RATE}]))',
                    "{{bunnyrelay_dns_nameserver}} {{bunnyrelay_dns_rcode}}",
                )
            ],
        )
    )
    board = board.with_panel(
        _graph(
            "Query latency by nameserver",
            "p99 of each query sent to the wire, by nameserver and rcode: a TIMEOUT line sits "
            "at the resolver's timeout.",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, bunnyrelay_dns_nameserver, "
                    "bunnyrelay_dns_rcode) (rate(bunnyrelay_dns_query_duration_seconds_bucket"
                    f'{{job=~"$job"}}[{RATE}])))',
                    "{{bunnyrelay_dns_nameserver}} {{bunnyrelay_dns_rcode}}",
                )
            ],
        )
    )
    board = board.with_panel(
        table.Panel()
        .title("The broken hop")
        .description("Failed lookups over the dashboard's time range, by cause.")
        .datasource(DATASOURCE)
        .span(12)
        .height(8)
        .with_target(
            prometheus.Dataquery()
            .expr(
                "sum by (bunnyrelay_dns_nameserver, bunnyrelay_dns_rcode, error_type) "
                '(increase(bunnyrelay_dns_lookups_total{job=~"$job", '
                'bunnyrelay_dns_outcome!="answered"}[$__range])) > 0'
            )
            .ref_id("A")
            .instant()
            .format(PromQueryFormat.TABLE)
        )
    )
    board = board.with_panel(
        text.Panel()
        .title("Which hop to call about")
        .mode(TextMode.MARKDOWN)
        .content(HOP_GUIDE)
        .span(12)
        .height(8)
    )
    board = board.with_row(gdash.Row("Stale answers and the search list"))
    board = board.with_panel(
        _graph(
            "Stale answers served",
            "Answers served past their expiry (RFC 8767) while every refresh fails.",
            "reqps",
            [
                (
                    "sum by (dns_question_name) (rate(bunnyrelay_dns_stale_age_seconds_count"
                    f'{{job=~"$job"}}[{RATE}]))',
                    "{{dns_question_name}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        _graph(
            "Age of stale answers",
            "How long past expiry the stale answers served were, on average: how long the "
            "path has been failing, at least.",
            "s",
            [
                (
                    "sum by (dns_question_name) (rate(bunnyrelay_dns_stale_age_seconds_sum"
                    f'{{job=~"$job"}}[{RATE}])) / sum by (dns_question_name) '
                    f'(rate(bunnyrelay_dns_stale_age_seconds_count{{job=~"$job"}}[{RATE}]))',
                    "{{dns_question_name}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        _graph(
            "Queries per lookup",
            "Queries one lookup sent, on average: with ndots:5, a name with fewer dots walks "
            "the search list before it is asked as it is.",
            "short",
            [
                (
                    "sum by (dns_question_name) (rate(bunnyrelay_dns_lookup_queries_sum"
                    f'{{job=~"$job"}}[{RATE}])) / sum by (dns_question_name) '
                    f'(rate(bunnyrelay_dns_lookup_queries_count{{job=~"$job"}}[{RATE}]))',
                    "{{dns_question_name}}",
                )
            ],
            width=8,
        )
    )
    return _numbered(board.build())


def jobs() -> Dashboard:
    """Jobs from both sides: bunny's rate, errors, duration and retries; relay's saturation."""
    board = (
        gdash.Dashboard("bunny/relay: Jobs")
        .uid("bunnyrelay-jobs")
        .description("Jobs as bunny sent them and as relay ran them.")
        .tags(["bunnyrelay", "jobs"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
    )
    board = _variables(
        board,
        ("job", "bunny", "bunnyrelay_job_attempts_total"),
        ("relay", "relay", "bunnyrelay_relay_ready"),
    )
    board = board.with_row(gdash.Row("bunny"))
    board = board.with_panel(
        _graph(
            "Jobs by kind and status",
            "Jobs bunny finished a second, after their retries.",
            "reqps",
            [
                (
                    "sum by (bunnyrelay_job_kind, bunnyrelay_job_status) "
                    f"(rate({BUNNY_JOBS}[{RATE}]))",
                    "{{bunnyrelay_job_kind}} {{bunnyrelay_job_status}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        _graph(
            "Errors by type",
            "Failed jobs by bunny's error class (NameNotFound, DnsTimeout, RelayUnavailable, "
            "RelayOverloaded, JobFailed...).",
            "reqps",
            [
                (
                    f"sum by (error_type) (rate({BUNNY_JOBS[:-1]}, "
                    f'bunnyrelay_job_status="FAILED"}}[{RATE}]))',
                    "{{error_type}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        _graph(
            "Attempts per job",
            "RPC attempts per job by kind: above 1, bunny retries.",
            "short",
            [
                (
                    "sum by (bunnyrelay_job_kind) (rate(bunnyrelay_job_attempts_total"
                    f'{{job=~"$job"}}[{RATE}])) / sum by (bunnyrelay_job_kind) '
                    f"(rate({BUNNY_JOBS}[{RATE}]))",
                    "{{bunnyrelay_job_kind}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        _graph(
            "Job duration by kind and status",
            "p50 and p99 of a job as its caller waited: the lookup, every attempt and backoff.",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, bunnyrelay_job_kind, "
                    "bunnyrelay_job_status) (rate(bunnyrelay_job_duration_seconds_bucket"
                    f'{{job=~"$job"}}[{RATE}])))',
                    "p99 {{bunnyrelay_job_kind}} {{bunnyrelay_job_status}}",
                ),
                (
                    "histogram_quantile(0.5, sum by (le, bunnyrelay_job_kind, "
                    "bunnyrelay_job_status) (rate(bunnyrelay_job_duration_seconds_bucket"
                    f'{{job=~"$job"}}[{RATE}])))',
                    "p50 {{bunnyrelay_job_kind}} {{bunnyrelay_job_status}}",
                ),
            ],
        )
    )
    board = board.with_panel(
        _graph(
            "RPC latency by method",
            "p99 of each RPC attempt from bunny (rpc.client.duration).",
            "ms",
            [
                (
                    "histogram_quantile(0.99, sum by (le, rpc_method) "
                    f'(rate(rpc_client_duration_milliseconds_bucket{{job=~"$job"}}[{RATE}])))',
                    "{{rpc_method}}",
                )
            ],
        )
    )
    board = board.with_row(gdash.Row("relay"))
    board = board.with_panel(
        stat.Panel()
        .title("Relays ready")
        .description("Relays whose health says SERVING.")
        .datasource(DATASOURCE)
        .span(4)
        .height(8)
        .with_target(_query('sum(bunnyrelay_relay_ready{job=~"$relay"})', "ready"))
    )
    board = board.with_panel(
        _graph(
            "relay saturation",
            "Jobs in flight over the in-flight limit, per relay: at 100% relay refuses with "
            "OVERLOADED.",
            "percentunit",
            [
                (
                    "sum by (bunnyrelay_relay_instance) "
                    '(bunnyrelay_relay_jobs_in_flight{job=~"$relay"}) / '
                    "sum by (bunnyrelay_relay_instance) "
                    '(bunnyrelay_relay_jobs_limit{job=~"$relay"})',
                    "{{bunnyrelay_relay_instance}}",
                )
            ],
            width=10,
        )
    )
    board = board.with_panel(
        _graph(
            "relay's jobs by status and reason",
            "Jobs relay answered, failed ones by reason: OVERLOADED and DRAINING are refusals.",
            "reqps",
            [
                (
                    f"sum by (bunnyrelay_job_status, error_type) (rate({RELAY_JOBS}[{RATE}]))",
                    "{{bunnyrelay_job_status}} {{error_type}}",
                )
            ],
            width=10,
        )
    )
    board = board.with_panel(
        _graph(
            "Idempotency store latency",
            "p99 of the store's operations (db.client.operation.duration).",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, db_system_name, db_operation_name) "
                    "(rate(db_client_operation_duration_seconds_bucket"
                    f'{{job=~"$relay"}}[{RATE}])))',
                    "{{db_system_name}} {{db_operation_name}}",
                )
            ],
        )
    )
    board = board.with_panel(
        _graph(
            "relay RPC latency by method",
            "p99 of relay's RPCs (rpc.server.duration).",
            "ms",
            [
                (
                    "histogram_quantile(0.99, sum by (le, rpc_method) "
                    f'(rate(rpc_server_duration_milliseconds_bucket{{job=~"$relay"}}[{RATE}])))',
                    "{{rpc_method}}",
                )
            ],
        )
    )
    return _numbered(board.build())


def _numbered(board: Dashboard) -> Dashboard:
    """Each panel and row its own id, in order, as Grafana would give them on saving."""
    for number, panel in enumerate(board.panels or [], start=1):
        panel.id_val = number
    return board


DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "dns-path.json": dns_path,
    "jobs.json": jobs,
}


def as_json(board: Dashboard) -> str:
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def expected() -> dict[Path, str]:
    """Every dashboard file and the text it should have."""
    return {OUTPUT_DIR / name: as_json(build()) for name, build in DASHBOARDS.items()}


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's JSON: its panels' and its variables'."""
    found = [
        str(target["expr"])
        for panel in board.get("panels", [])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    found += [
        str(variable["query"])
        for variable in board.get("templating", {}).get("list", [])
        if variable.get("type") == "query"
    ]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    files = expected()
    stale = [path for path, body in files.items() if not path.is_file() or path.read_text() != body]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run `python -m lab.dashboards`)")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
