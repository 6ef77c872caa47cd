"""One HTML page of a run's key panels, from the metrics bunny and relay exported in it.

For people without Grafana: ``make demo`` writes it next to its logs. The panels are
the dashboards' own questions, answered from the totals of one run (the OTLP sink's
last point of each series; bunny and relay export cumulative sums):

- DNS query latency by nameserver and rcode (``bunnyrelay.dns.query.duration``): where
  the time of a lookup went, hop by hop;
- lookups by outcome and rcode (``bunnyrelay.dns.lookups``) and queries per lookup;
- jobs by kind and status, as bunny finished them and as relay answered them
  (``bunnyrelay.jobs``), with attempts per job, and bunny's job duration.

Plain HTML and inline SVG, no script: it opens from the file system, and is small enough
to attach to an issue.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bunnyrelay import semconv
from lab.otlpsink import SinkPoint

_BAR_WIDTH = 420
_ROW_HEIGHT = 22
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1d1d1f; max-width: 64em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
p.note { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font-size: 12px; font-family: system-ui, sans-serif; }
"""
_COLOURS = {"ok": "#3a7d44", "bad": "#c0392b", "slow": "#d68910", "plain": "#2e86c1"}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    colour: str = _COLOURS["plain"]


def _lookups(count: int) -> str:
    return "1 lookup" if count == 1 else f"{count} lookups"


def quantile(point: SinkPoint, q: float) -> float:
    """The ``q`` quantile of a histogram point, interpolated within its bucket (as
    Prometheus's histogram_quantile does); the last finite bound for the overflow bucket."""
    if point.count == 0 or not point.bounds:
        return 0.0
    rank = q * point.count
    seen = 0
    lower = 0.0
    for index, in_bucket in enumerate(point.bucket_counts):
        upper = point.bounds[index] if index < len(point.bounds) else point.bounds[-1]
        if in_bucket and seen + in_bucket >= rank:
            return lower + (upper - lower) * (rank - seen) / in_bucket
        seen += in_bucket
        lower = upper
    return point.bounds[-1]


def _bars(bars: Sequence[Bar]) -> str:
    if not bars:
        return '<p class="note">Nothing was recorded for this panel in this run.</p>'
    top = max(bar.value for bar in bars) or 1.0
    label_width = 8 * max(len(bar.label) for bar in bars) + 16
    height = _ROW_HEIGHT * len(bars) + 4
    rows = []
    for index, bar in enumerate(bars):
        y = index * _ROW_HEIGHT + 2
        width = max(1.0, _BAR_WIDTH * bar.value / top)
        rows.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">'
            f"{html.escape(bar.label)}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{width:.1f}" height="{_ROW_HEIGHT - 6}" '
            f'fill="{bar.colour}"/>'
            f'<text x="{label_width + width + 6:.1f}" y="{y + 15}">{html.escape(bar.text)}</text>'
        )
    total_width = label_width + _BAR_WIDTH + 160
    return f'<svg width="{total_width}" height="{height}" role="img">' + "".join(rows) + "</svg>"


def _of(points: Iterable[SinkPoint], name: str, service: str) -> list[SinkPoint]:
    """The points of ``name`` from ``service``, the instances of one series added up (two
    relays' counts of the same kind and status are one bar)."""
    merged: dict[str, SinkPoint] = {}
    for point in points:
        if point.name != name or point.service != service:
            continue
        key = repr(sorted(point.attributes.items()))
        seen = merged.get(key)
        merged[key] = point if seen is None else _added(seen, point)
    return list(merged.values())


def _added(one: SinkPoint, other: SinkPoint) -> SinkPoint:
    return dataclasses.replace(
        one,
        instance="",
        value=one.value + other.value,
        count=one.count + other.count,
        sum=one.sum + other.sum,
        bucket_counts=tuple(
            a + b for a, b in zip(one.bucket_counts, other.bucket_counts, strict=True)
        ),
    )


def _attribute(point: SinkPoint, key: str) -> str:
    return str(point.attributes.get(key, ""))


def dns_query_latency(points: Sequence[SinkPoint]) -> str:
    bars = []
    for point in _of(points, semconv.METRIC_DNS_QUERY_DURATION, "bunny"):
        rcode = _attribute(point, semconv.DNS_RCODE)
        p50, p99 = quantile(point, 0.5) * 1000, quantile(point, 0.99) * 1000
        colour = _COLOURS["ok"] if rcode == "NOERROR" else _COLOURS["bad"]
        if rcode == "NXDOMAIN":
            colour = _COLOURS["slow"]
        bars.append(
            Bar(
                f"{_attribute(point, semconv.DNS_NAMESERVER)} {rcode}",
                p99,
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {point.count} queries",
                colour,
            )
        )
    return _bars(sorted(bars, key=lambda bar: bar.label))


def lookups(points: Sequence[SinkPoint]) -> str:
    bars = []
    for point in _of(points, semconv.METRIC_DNS_LOOKUPS, "bunny"):
        outcome = _attribute(point, semconv.DNS_OUTCOME)
        colour = {"answered": _COLOURS["ok"], "stale": _COLOURS["slow"]}.get(
            outcome, _COLOURS["bad"]
        )
        label = (
            f"{_attribute(point, semconv.DNS_QUESTION_NAME)} {outcome} "
            f"{_attribute(point, semconv.DNS_RCODE)}"
        )
        bars.append(Bar(label, point.value, f"{point.value:g}", colour))
    per_lookup = [
        Bar(
            _attribute(point, semconv.DNS_QUESTION_NAME),
            point.sum / point.count,
            f"{point.sum / point.count:.1f} queries a lookup ({_lookups(point.count)})",
        )
        for point in _of(points, semconv.METRIC_DNS_LOOKUP_QUERIES, "bunny")
        if point.count
    ]
    return (
        _bars(sorted(bars, key=lambda bar: bar.label))
        + "<h3>Queries per lookup</h3>"
        + _bars(per_lookup)
    )


def jobs(points: Sequence[SinkPoint], service: str) -> str:
    bars = []
    for point in _of(points, semconv.METRIC_JOBS, service):
        status = _attribute(point, semconv.JOB_STATUS)
        error = _attribute(point, semconv.ERROR_TYPE)
        label = f"{_attribute(point, semconv.JOB_KIND)} {status}" + (f" {error}" if error else "")
        colour = _COLOURS["ok"] if status == "SUCCEEDED" else _COLOURS["bad"]
        bars.append(Bar(label, point.value, f"{point.value:g}", colour))
    return _bars(sorted(bars, key=lambda bar: bar.label))


def job_duration(points: Sequence[SinkPoint]) -> str:
    attempts = {
        (_attribute(p, semconv.JOB_KIND), _attribute(p, semconv.JOB_STATUS)): p.value
        for p in _of(points, semconv.METRIC_JOB_ATTEMPTS, "bunny")
    }
    finished = {
        (_attribute(p, semconv.JOB_KIND), _attribute(p, semconv.JOB_STATUS)): p.value
        for p in _of(points, semconv.METRIC_JOBS, "bunny")
    }
    bars = []
    for point in _of(points, semconv.METRIC_JOB_DURATION, "bunny"):
        key = (_attribute(point, semconv.JOB_KIND), _attribute(point, semconv.JOB_STATUS))
        p50, p99 = quantile(point, 0.5) * 1000, quantile(point, 0.99) * 1000
        per_job = attempts.get(key, 0) / finished[key] if finished.get(key) else 0.0
        bars.append(
            Bar(
                " ".join(key),
                p99,
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {per_job:.2f} attempts a job",
            )
        )
    return _bars(sorted(bars, key=lambda bar: bar.label))


def render(points: Sequence[SinkPoint], *, title: str, note: str = "") -> str:
    """The page, from the last point of each series of a run (:meth:`OtlpSink.series`)."""
    sections = [
        (
            "DNS query latency by nameserver and rcode",
            "Each query bunny sent, by the nameserver that answered it (the first hop) and "
            "how it answered. NXDOMAIN for search-list names is what ndots costs.",
            dns_query_latency(points),
        ),
        (
            "Lookups by outcome",
            "Lookups past bunny's fresh cache: answered, stale, or failed with an rcode.",
            lookups(points),
        ),
        ("Jobs by status, as bunny finished them", "", jobs(points, "bunny")),
        ("Jobs by status, as relay answered them", "", jobs(points, "relay")),
        (
            "Job duration by kind and status",
            "As the caller waited: the lookup, every attempt and backoff.",
            job_duration(points),
        ),
    ]
    body = "".join(
        f"<h2>{html.escape(heading)}</h2>"
        + (f'<p class="note">{html.escape(explanation)}</p>' if explanation else "")
        + panel
        for heading, explanation, panel in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        + (f'<p class="note">{html.escape(note)}</p>' if note else "")
        + body
        + "</body></html>\n"
    )
