"""The results of ``make bench``: one table of ratios, as text for people, JSON for machines,
and Markdown for docs/benchmarks.md (with the method it was measured by)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bunnyrelay.lab.bench.cases import Case, Store


@dataclass
class CaseResult:
    """One case as measured. CPU per job is per *successful* job of the measured window."""

    case: Case
    jobs: int
    failed: int
    jobs_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    client_cpu_us: float | None
    server_cpu_us: float | None
    client_peak_mb: float | None
    server_peak_mb: float | None
    server_ready_s: float | None = None
    spans_per_job: float | None = None
    """Spans the OTLP receiver got from bunny and relay per job run (warm-up included)."""
    dns_queries_per_job: float | None = None
    """Queries that reached the DNS server per job run (warm-up included)."""
    windowed: bool = True
    """Whether the server's CPU was read at the client's window marks (else over its life)."""
    load_average: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        c = self.case
        return {
            "key": c.key,
            "label": c.label,
            "client": c.client,
            "server": c.server,
            "mode": c.mode,
            "tracing": c.tracing.value,
            "dns": c.dns.value,
            "store": c.store.value,
            "baseline": c.baseline,
            "jobs": self.jobs,
            "failed": self.failed,
            "jobs_per_s": round(self.jobs_per_s, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "client_cpu_us_per_job": _r(self.client_cpu_us, 1),
            "server_cpu_us_per_job": _r(self.server_cpu_us, 1),
            "client_peak_rss_mb": _r(self.client_peak_mb, 1),
            "server_peak_rss_mb": _r(self.server_peak_mb, 1),
            "server_ready_s": _r(self.server_ready_s, 3),
            "spans_per_job": _r(self.spans_per_job, 2),
            "dns_queries_per_job": _r(self.dns_queries_per_job, 3),
            "server_cpu_windowed": self.windowed,
            "load_average_1m": round(self.load_average, 2),
            "errors": dict(self.errors),
        }


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int
    cell: Callable[[CaseResult, CaseResult | None], str]
    """The text for a result, given its baseline's result (None for a baseline)."""


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _x(value: float | None, base: float | None) -> str:
    ratio = _ratio(value, base)
    return "" if ratio is None else f"{ratio:.2f}x"


def _with_ratio(
    get: Callable[[CaseResult], float | None], spec: str
) -> Callable[[CaseResult, CaseResult | None], str]:
    def cell(result: CaseResult, base: CaseResult | None) -> str:
        text = _num(get(result), spec)
        ratio = _x(get(result), get(base)) if base is not None else ""
        return f"{text} ({ratio})" if ratio else text

    return cell


COLUMNS: tuple[Column, ...] = (
    Column("jobs/s (x base)", 17, _with_ratio(lambda r: r.jobs_per_s, ",.0f")),
    Column("p50 ms", 7, lambda r, _: _num(r.p50_ms, ".1f")),
    Column("p99 ms", 7, lambda r, _: _num(r.p99_ms, ".1f")),
    Column("client CPU µs/job", 19, _with_ratio(lambda r: r.client_cpu_us, ",.0f")),
    Column("server CPU µs/job", 19, _with_ratio(lambda r: r.server_cpu_us, ",.0f")),
    Column("client MiB", 10, lambda r, _: _num(r.client_peak_mb, ".0f")),
    Column("server MiB", 10, lambda r, _: _num(r.server_peak_mb, ".0f")),
    Column("spans/job", 9, lambda r, _: _num(r.spans_per_job, ".2f")),
    Column("DNS q/job", 9, lambda r, _: _num(r.dns_queries_per_job, ".3f")),
    Column("failed", 6, lambda r, _: str(r.failed)),
    Column("load 1m", 7, lambda r, _: f"{r.load_average:.1f}"),
)


def _target_cell(result: CaseResult, by_key: dict[str, CaseResult]) -> str:
    target = result.case.target
    if target is None:
        return ""
    against = by_key.get(target.against)
    ratio = _ratio(result.jobs_per_s, against.jobs_per_s if against else None)
    if ratio is None:
        return f"{target.describe()}: -"
    verdict = "met" if ratio >= target.ratio else "MISSED"
    return f"{target.describe()}: {ratio:.2f}x {verdict}"


def _rows(results: Sequence[CaseResult]) -> list[list[str]]:
    by_key = {r.case.key: r for r in results}
    rows = []
    for result in results:
        base = by_key.get(result.case.baseline) if result.case.baseline else None
        rows.append(
            [result.case.label]
            + [column.cell(result, base) for column in COLUMNS]
            + [_target_cell(result, by_key)]
        )
    return rows


def text_table(results: Sequence[CaseResult]) -> str:
    titles = ["case", *(c.title for c in COLUMNS), "target (issue 6)"]
    rows = _rows(results)
    widths = [max(len(titles[i]), *(len(row[i]) for row in rows)) for i in range(len(titles))]
    lines = []
    for row in [titles, *rows]:
        cells = [
            row[i].ljust(widths[i]) if i in (0, len(row) - 1) else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(results: Sequence[CaseResult]) -> str:
    titles = ["case", *(c.title for c in COLUMNS), "target (issue 6)"]
    lines = [
        "| " + " | ".join(titles) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|",
    ]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in _rows(results)]
    return "\n".join(lines)


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def relay_targets(results: Sequence[CaseResult]) -> list[dict[str, object]]:
    """relay's own targets from issue 6: ready within 1.5 s, under 80 MB resident."""
    relays = [r for r in results if r.case.server == "relay"]
    ready = [r.server_ready_s for r in relays if r.server_ready_s is not None]
    # relay as deployed: its default store, SQLite, keeps results on disk and only a
    # bounded cache of recent ones in memory. The memory store keeps every result it
    # remembers (--dedupe-capacity) in memory by design, so its peak is shown apart.
    peak = [
        r.server_peak_mb
        for r in relays
        if r.server_peak_mb is not None and r.case.store is Store.DEFAULT
    ]
    in_memory = [
        r.server_peak_mb
        for r in relays
        if r.server_peak_mb is not None and r.case.store is Store.MEMORY
    ]
    out: list[dict[str, object]] = []
    if ready:
        out.append(
            {
                "target": "relay ready (listening) after start, slowest of the run, s",
                "value": round(max(ready), 3),
                "goal": "<= 1.5",
                "met": max(ready) <= 1.5,
            }
        )
    if peak:
        out.append(
            {
                "target": "relay peak resident memory at 64 jobs in flight, default store "
                "(SQLite), largest, MiB",
                "value": round(max(peak), 1),
                "goal": "< 80 MB (76.3 MiB)",
                "met": max(peak) < 80e6 / 2**20,
            }
        )
    if in_memory:
        out.append(
            {
                "target": "the same with --store memory, which holds up to --dedupe-capacity "
                "results (100,000) in memory, MiB",
                "value": round(max(in_memory), 1),
                "goal": "(grows with the results held; docs/stores.md)",
                "met": None,
            }
        )
    return out


def targets_text(targets: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        lines.append(f"- {t['target']}: {t['value']} (goal {t['goal']}): {verdict}")
    return "\n".join(lines)
