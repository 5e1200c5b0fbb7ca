"""How bench/run.py states a ratio run by run: the median of the pairs, and an interval of that median
that holds it, lies within the pairs' range and is the same for the same runs (a fixed seed)."""

from __future__ import annotations

import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.run import MIN_PAIRS_FOR_INTERVAL, median_interval, paired_ratios

CPU_MS = st.floats(min_value=0.05, max_value=50.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(CPU_MS, min_size=MIN_PAIRS_FOR_INTERVAL, max_size=25))
def test_the_interval_holds_the_median_within_the_range(values: list[float]) -> None:
    low, high = median_interval(values, resamples=400)
    assert min(values) <= low <= statistics.median(values) <= high <= max(values)
    assert median_interval(values, resamples=400) == (low, high)


def test_the_interval_is_printed_only_from_enough_pairs() -> None:
    provider, bound = [2.0, 2.2, 1.9, 2.1, 2.4, 2.0, 2.3], [1.7, 1.8, 1.7, 1.9, 1.9, 1.8, 2.0]
    assert "interval" in paired_ratios(provider, bound)
    few = paired_ratios(provider[:MIN_PAIRS_FOR_INTERVAL - 1], bound[:MIN_PAIRS_FOR_INTERVAL - 1])
    assert few.startswith("; run by run ") and "interval" not in few
    assert paired_ratios(provider, bound[:-1]) == ""  # unpaired runs give no ratio run by run


def test_a_wide_spread_gives_a_wider_interval() -> None:
    steady = [0.85, 0.86, 0.84, 0.85, 0.86, 0.84, 0.85, 0.85, 0.86]
    noisy = [0.70, 1.05, 0.80, 0.92, 0.66, 0.99, 0.85, 0.75, 1.10]
    steady_low, steady_high = median_interval(steady)
    noisy_low, noisy_high = median_interval(noisy)
    assert noisy_high - noisy_low > steady_high - steady_low


def test_one_outlying_run_does_not_move_the_interval() -> None:
    """An interval of the median, not of the runs: one disturbed run of nine leaves it where the others are."""
    assert median_interval([0.85] * 8 + [0.40]) == (0.85, 0.85)
