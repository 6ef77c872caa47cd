"""The DNS benchmark's targets are judged on ratios taken within each round."""

from __future__ import annotations

import pytest

from lab.bench.dnsbench import RoundFigures, uncached_ratios


def _round(p50_us: float, per_s: float, cpu_us: float) -> RoundFigures:
    return RoundFigures(p50_us=p50_us, lookups_per_s=per_s, cpu_us_per_lookup=cpu_us)


def test_latency_ratio_is_the_median_of_ratios_within_rounds() -> None:
    # The machine slows down in round 2: both methods take twice as long there.
    # Within the rounds traced is 1.1x, 1.2x and 1.6x bare; the ratio of the two
    # medians across rounds (400 / 300) would say 1.33x.
    rounds = {
        "bunny.traced": [_round(330, 1, 1), _round(720, 1, 1), _round(400, 1, 1)],
        "aiodns": [_round(300, 1, 1), _round(600, 1, 1), _round(250, 1, 1)],
        "dnspython": [_round(1, 1, 1)] * 3,
    }

    latency, _, _ = uncached_ratios(rounds)

    assert latency is not None
    assert latency.median == pytest.approx(1.2)
    assert latency.low == pytest.approx(1.1)
    assert latency.high == pytest.approx(1.6)


def test_throughput_and_cpu_ratios_compare_traced_with_dnspython_round_by_round() -> None:
    # Ratios of the medians across rounds would say 2.2x and 2.5x.
    rounds = {
        "bunny.traced": [_round(1, 3000, 100), _round(1, 1000, 400), _round(1, 2200, 120)],
        "aiodns": [_round(1, 1, 1)] * 3,
        "dnspython": [_round(1, 1000, 300), _round(1, 500, 600), _round(1, 1100, 240)],
    }

    _, throughput, cpu_bound = uncached_ratios(rounds)

    assert throughput is not None
    assert cpu_bound is not None
    assert (throughput.median, throughput.low, throughput.high) == pytest.approx((2.0, 2.0, 3.0))
    assert (cpu_bound.median, cpu_bound.low, cpu_bound.high) == pytest.approx((2.0, 1.5, 3.0))


def test_a_round_with_no_latency_figure_is_left_out_not_counted_as_zero() -> None:
    rounds = {
        "bunny.traced": [
            RoundFigures(p50_us=None, lookups_per_s=1, cpu_us_per_lookup=1),
            _round(500, 1, 1),
        ],
        "aiodns": [_round(250, 1, 1), _round(250, 1, 1)],
        "dnspython": [_round(1, 1, 1)] * 2,
    }

    latency, _, _ = uncached_ratios(rounds)

    assert latency is not None
    assert (latency.median, latency.low, latency.high) == (2.0, 2.0, 2.0)
