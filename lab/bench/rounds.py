"""What a case measured: one round (:class:`CaseResult`) and all its rounds (:class:`CaseRounds`).

The machine ``make bench`` runs on is noisy: back-to-back runs of the same raw case range
from 2,900 to 3,900 jobs/s, so one run of each case cannot tell 0.65x from 0.78x. So every
case runs once per round, and its ratio is taken against its baseline's result *in the same
round* (measured minutes apart at most, not across the whole run); what is reported is the
median of those per-round ratios and their range. The ratio of the two medians would not do:
it can set a round the machine was fast in against one it was slow in.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from lab.bench.cases import Case, Target


@dataclass
class CaseResult:
    """One case as measured in one round. CPU per job is per *successful* job of the
    measured window."""

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
            **self.measured_dict(),
        }

    def measured_dict(self) -> dict[str, object]:
        """What was measured, without what the case is."""
        return {
            "jobs": self.jobs,
            "failed": self.failed,
            "jobs_per_s": round(self.jobs_per_s, 1),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "client_cpu_us_per_job": _rounded(self.client_cpu_us, 1),
            "server_cpu_us_per_job": _rounded(self.server_cpu_us, 1),
            "client_peak_rss_mb": _rounded(self.client_peak_mb, 1),
            "server_peak_rss_mb": _rounded(self.server_peak_mb, 1),
            "server_ready_s": _rounded(self.server_ready_s, 3),
            "spans_per_job": _rounded(self.spans_per_job, 2),
            "dns_queries_per_job": _rounded(self.dns_queries_per_job, 3),
            "server_cpu_windowed": self.windowed,
            "load_average_1m": round(self.load_average, 2),
            "errors": dict(self.errors),
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``; None when either is unknown or the base is zero."""
    return None if value is None or not base else value / base


@dataclass(frozen=True, slots=True)
class Spread:
    """Values from several rounds: their median and their range."""

    median: float
    low: float
    high: float
    count: int
    """How many rounds had a value."""

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        """The spread of the known values; None when no round had one."""
        known = [v for v in values if v is not None]
        if not known:
            return None
        return cls(statistics.median(known), min(known), max(known), len(known))

    def as_dict(self, digits: int = 3) -> dict[str, float]:
        return {
            "median": round(self.median, digits),
            "min": round(self.low, digits),
            "max": round(self.high, digits),
        }


@dataclass(frozen=True, slots=True)
class CaseRounds:
    """One case over every round: each round's result, its ratios against the results of the
    same round, and the rounds combined (:func:`combined`)."""

    case: Case
    rounds: tuple[CaseResult, ...]
    """One result per round, in the order the rounds ran."""
    combined: CaseResult
    jobs_ratios: tuple[float | None, ...]
    """Per round: jobs/s against the baseline's jobs/s in that round (None for a baseline)."""
    client_cpu_ratios: tuple[float | None, ...]
    server_cpu_ratios: tuple[float | None, ...]
    target_ratios: tuple[tuple[float | None, ...], ...]
    """Per target of the case, in order: per round, jobs/s against the target's case in that
    round."""

    @property
    def jobs_ratio(self) -> Spread | None:
        return Spread.of(self.jobs_ratios)

    @property
    def client_cpu_ratio(self) -> Spread | None:
        return Spread.of(self.client_cpu_ratios)

    @property
    def server_cpu_ratio(self) -> Spread | None:
        return Spread.of(self.server_cpu_ratios)

    @property
    def verdicts(self) -> list[TargetVerdict]:
        """Each of the case's targets with what was measured against it."""
        return [
            TargetVerdict(target, Spread.of(ratios))
            for target, ratios in zip(self.case.targets, self.target_ratios, strict=True)
        ]

    def as_dict(self) -> dict[str, object]:
        """The combined result under the keys a single run always had, plus the rounds."""
        return {
            **self.combined.as_dict(),
            "ratio": _spread_dict(self.jobs_ratio),
            "client_cpu_ratio": _spread_dict(self.client_cpu_ratio),
            "server_cpu_ratio": _spread_dict(self.server_cpu_ratio),
            "targets": [verdict.as_dict() for verdict in self.verdicts],
            "rounds": [
                {
                    "round": number,
                    **result.measured_dict(),
                    "ratio": _rounded(jobs_ratio, 3),
                    "target_ratios": [
                        _rounded(ratios[number - 1], 3) for ratios in self.target_ratios
                    ],
                }
                for number, (result, jobs_ratio) in enumerate(
                    zip(self.rounds, self.jobs_ratios, strict=True), 1
                )
            ],
        }


@dataclass(frozen=True, slots=True)
class TargetVerdict:
    """One target of a case and the per-round ratios measured against it."""

    target: Target
    measured: Spread | None

    @property
    def met(self) -> bool | None:
        """Whether the *median* per-round ratio meets the target (None: nothing to judge)."""
        if self.measured is None:
            return None
        return self.measured.median >= self.target.ratio

    def as_dict(self) -> dict[str, object]:
        return {
            "goal": self.target.describe(),
            "against": self.target.against,
            "ratio": _spread_dict(self.measured),
            "met": self.met,
        }


def _spread_dict(spread: Spread | None) -> dict[str, float] | None:
    return None if spread is None else spread.as_dict()


def combine_rounds(rounds: Sequence[Sequence[CaseResult]]) -> list[CaseRounds]:
    """Every case of ``rounds`` (each round: its results in the order they ran), in the
    order of its first round, with each ratio taken within a round."""
    by_round = [{result.case.key: result for result in results} for results in rounds]
    cases: dict[str, Case] = {}
    for results in rounds:
        for result in results:
            cases.setdefault(result.case.key, result.case)
    return [_case_rounds(case, by_round) for case in cases.values()]


def _case_rounds(case: Case, by_round: Sequence[dict[str, CaseResult]]) -> CaseRounds:
    measured = [results for results in by_round if case.key in results]

    def per_round(
        against: str, get: Callable[[CaseResult], float | None]
    ) -> tuple[float | None, ...]:
        if not against:
            return tuple(None for _ in measured)
        return tuple(
            ratio(get(results[case.key]), get(results[against])) if against in results else None
            for results in measured
        )

    def jobs_per_s(result: CaseResult) -> float:
        return result.jobs_per_s

    rounds = tuple(results[case.key] for results in measured)
    return CaseRounds(
        case=case,
        rounds=rounds,
        combined=combined(rounds),
        jobs_ratios=per_round(case.baseline, jobs_per_s),
        client_cpu_ratios=per_round(case.baseline, lambda r: r.client_cpu_us),
        server_cpu_ratios=per_round(case.baseline, lambda r: r.server_cpu_us),
        target_ratios=tuple(per_round(t.against, jobs_per_s) for t in case.targets),
    )


def combined(rounds: Sequence[CaseResult]) -> CaseResult:
    """One case's rounds as one result: the median of each figure, except where the median
    would hide what matters. Failed jobs are summed, so that a failure in any round shows;
    peak memory and the time to ready are the largest, since their targets are limits."""
    first = rounds[0]
    errors: Counter[str] = Counter()
    for result in rounds:
        errors.update(result.errors)
    return CaseResult(
        case=first.case,
        jobs=sum(r.jobs for r in rounds),
        failed=sum(r.failed for r in rounds),
        jobs_per_s=statistics.median(r.jobs_per_s for r in rounds),
        p50_ms=_median(r.p50_ms for r in rounds),
        p99_ms=_median(r.p99_ms for r in rounds),
        client_cpu_us=_median(r.client_cpu_us for r in rounds),
        server_cpu_us=_median(r.server_cpu_us for r in rounds),
        client_peak_mb=_largest(r.client_peak_mb for r in rounds),
        server_peak_mb=_largest(r.server_peak_mb for r in rounds),
        server_ready_s=_largest(r.server_ready_s for r in rounds),
        spans_per_job=_median(r.spans_per_job for r in rounds),
        dns_queries_per_job=_median(r.dns_queries_per_job for r in rounds),
        windowed=all(r.windowed for r in rounds),
        load_average=statistics.median(r.load_average for r in rounds),
        errors=dict(errors),
    )


def _median(values: Iterable[float | None]) -> float | None:
    spread = Spread.of(values)
    return None if spread is None else spread.median


def _largest(values: Iterable[float | None]) -> float | None:
    spread = Spread.of(values)
    return None if spread is None else spread.high
