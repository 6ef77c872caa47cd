"""The results of ``make bench``: one table of ratios, as text for people and as Markdown for
docs/benchmarks.md (:mod:`.writeup`). Each row is a case over every round (:mod:`.rounds`):
its figures combined, its ratios the median of the per-round ratios."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lab.bench.cases import Store
from lab.bench.rounds import CaseResult, CaseRounds, Spread, TargetVerdict

RANGE_DASH = "\u2013"
"""An en dash: between the lowest and the highest value of a range."""


def _range(spread: Spread) -> str:
    return f"{spread.low:.2f}{RANGE_DASH}{spread.high:.2f}"


def ratio_text(spread: Spread) -> str:
    """The median ratio (``0.72x``), then with more than one round the lowest and the highest
    in brackets."""
    text = f"{spread.median:.2f}x"
    return f"{text} ({_range(spread)})" if spread.count > 1 else text


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    cell: Callable[[CaseRounds], str]


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _with_ratio(
    get: Callable[[CaseResult], float | None],
    ratio: Callable[[CaseRounds], Spread | None],
    spec: str,
    *,
    with_range: bool = False,
) -> Callable[[CaseRounds], str]:
    """The combined figure, then the median of its per-round ratios against the baseline."""

    def cell(case: CaseRounds) -> str:
        text = _num(get(case.combined), spec)
        spread = ratio(case)
        if spread is None:
            return text
        if with_range and spread.count > 1:
            return f"{text} ({spread.median:.2f}x, {_range(spread)})"
        return f"{text} ({spread.median:.2f}x)"

    return cell


def _combined(get: Callable[[CaseResult], float | None], spec: str) -> Callable[[CaseRounds], str]:
    return lambda case: _num(get(case.combined), spec)


def _failed(case: CaseRounds) -> str:
    """Failed jobs of every round, and which rounds had them when there was more than one."""
    text = str(case.combined.failed)
    failing = [str(n) for n, result in enumerate(case.rounds, 1) if result.failed]
    if failing and len(case.rounds) > 1:
        text += f" (round{'s' if len(failing) > 1 else ''} {', '.join(failing)})"
    return text


# Only jobs/s shows its range in the table: it is what the targets are about. The JSON has
# every ratio's range.
COLUMNS: tuple[Column, ...] = (
    Column(
        "jobs/s (x base)",
        _with_ratio(lambda r: r.jobs_per_s, lambda c: c.jobs_ratio, ",.0f", with_range=True),
    ),
    Column("p50 ms", _combined(lambda r: r.p50_ms, ".1f")),
    Column("p99 ms", _combined(lambda r: r.p99_ms, ".1f")),
    Column(
        "client CPU µs/job",
        _with_ratio(lambda r: r.client_cpu_us, lambda c: c.client_cpu_ratio, ",.0f"),
    ),
    Column(
        "server CPU µs/job",
        _with_ratio(lambda r: r.server_cpu_us, lambda c: c.server_cpu_ratio, ",.0f"),
    ),
    Column("client MiB", _combined(lambda r: r.client_peak_mb, ".0f")),
    Column("server MiB", _combined(lambda r: r.server_peak_mb, ".0f")),
    Column("spans/job", _combined(lambda r: r.spans_per_job, ".2f")),
    Column("DNS q/job", _combined(lambda r: r.dns_queries_per_job, ".3f")),
    Column("failed", _failed),
    Column("load 1m", lambda c: f"{c.combined.load_average:.1f}"),
)


def target_measured(verdict: TargetVerdict) -> str:
    """The median per-round ratio against the target's case, with its range; "-" without."""
    return "-" if verdict.measured is None else ratio_text(verdict.measured)


def _target_cell(case: CaseRounds) -> str:
    cells = []
    for verdict in case.verdicts:
        met = {True: " met", False: " MISSED", None: ""}[verdict.met]
        cells.append(f"{verdict.target.describe()}: {target_measured(verdict)}{met}")
    return "; ".join(cells)


def _rows(cases: Sequence[CaseRounds]) -> list[list[str]]:
    return [
        [case.case.label, *(column.cell(case) for column in COLUMNS), _target_cell(case)]
        for case in cases
    ]


def text_table(cases: Sequence[CaseRounds]) -> str:
    titles = ["case", *(c.title for c in COLUMNS), "target"]
    rows = _rows(cases)
    widths = [max(len(titles[i]), *(len(row[i]) for row in rows)) for i in range(len(titles))]
    lines = []
    for row in [titles, *rows]:
        cells = [
            row[i].ljust(widths[i]) if i in (0, len(row) - 1) else row[i].rjust(widths[i])
            for i in range(len(row))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(cases: Sequence[CaseRounds]) -> str:
    titles = ["case", *(c.title for c in COLUMNS), "target"]
    lines = [
        "| " + " | ".join(titles) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(COLUMNS) + ["---"]) + "|",
    ]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in _rows(cases)]
    return "\n".join(lines)


def markdown_rows(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target_row(
    what: str,
    value: float | None,
    goal: str,
    met: bool | None,
    spread: Spread | None = None,
    *,
    digits: int = 3,
) -> dict[str, object]:
    """One row of the targets beside the table: relay's own, and the DNS benchmark's."""
    return {
        "target": what,
        # Three digits by default: 1.304 must not print as a 1.3 that misses a 1.3x goal.
        "value": None if value is None else round(value, digits),
        "range": None
        if spread is None
        else [round(spread.low, digits), round(spread.high, digits)],
        "goal": goal,
        "met": met,
    }


def relay_targets(cases: Sequence[CaseRounds]) -> list[dict[str, object]]:
    """relay's and bunny's own performance targets: relay ready within 1.5 s, each under 80 MB
    resident; over every round (the combined results keep the slowest start and the largest
    peak)."""
    relays = [c.combined for c in cases if c.case.server == "relay"]
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
            target_row(
                "relay ready (listening) after start, slowest of the run, s",
                max(ready),
                "<= 1.5",
                max(ready) <= 1.5,
            )
        )
    if peak:
        out.append(
            target_row(
                "relay peak resident memory at 64 jobs in flight, default store "
                "(SQLite), largest, MiB",
                max(peak),
                "< 80 MB (76.3 MiB)",
                max(peak) < 80e6 / 2**20,
                digits=1,
            )
        )
    if in_memory:
        out.append(
            target_row(
                "the same with --store memory, which holds up to --dedupe-capacity "
                "results (100,000) in memory, MiB",
                max(in_memory),
                "(grows with the results held; docs/stores.md)",
                None,
                digits=1,
            )
        )
    # bunny keeps its jobs in flight, its resolver cache and its unexported spans: its peak
    # over every case at the same jobs in flight, beside relay's.
    bunny = [
        c.combined.client_peak_mb
        for c in cases
        if c.case.client == "bunny" and c.combined.client_peak_mb is not None
    ]
    if bunny:
        out.append(
            target_row(
                "bunny peak resident memory at 64 jobs in flight, any case, largest, MiB",
                max(bunny),
                "< 80 MB (76.3 MiB)",
                max(bunny) < 80e6 / 2**20,
                digits=1,
            )
        )
    return out


def target_value_text(target: dict[str, Any]) -> str:
    """A target's measured value, with the lowest and highest of its rounds when it has them."""
    value, spread = target["value"], target.get("range")
    if value is None or not spread:
        return str(value)
    return f"{value} ({spread[0]}{RANGE_DASH}{spread[1]})"


def targets_text(targets: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        lines.append(f"- {t['target']}: {target_value_text(t)} (goal {t['goal']}): {verdict}")
    return "\n".join(lines)
