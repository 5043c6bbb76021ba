"""Paired t-test against a hand computation and scipy; pairing by id; NaN handling; summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mr2ct.metrics import paired_ttest, summarize


def test_ttest_on_known_samples_equals_hand_computation() -> None:
    """Differences 1..5: mean 3, sd sqrt(2.5), so t = 3 / (sqrt(2.5) / sqrt(5)) = 3 sqrt(2), df 4."""
    result = paired_ttest([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    assert result.statistic == pytest.approx(3 * math.sqrt(2))
    assert result.pvalue == pytest.approx(2 * stats.t.sf(3 * math.sqrt(2), df=4))
    assert (result.n, result.mean_difference, result.n_dropped) == (5, 3.0, 0)


def test_ttest_equals_formula_and_scipy_on_random_samples() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(27.0, 1.0, 40)
    b = a - rng.normal(0.3, 0.5, 40)
    differences = a - b
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(40))
    result = paired_ttest(a, b)
    assert result.statistic == pytest.approx(t)
    assert result.pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_ttest(b, a).statistic == pytest.approx(-t)


def test_dicts_are_paired_by_key_not_order() -> None:
    a = {"s1": 0.8, "s2": 0.7, "s3": 0.9, "s4": 0.6}
    b = {"s3": 0.85, "s1": 0.7, "s4": 0.65, "s2": 0.6}
    expected = paired_ttest([0.8, 0.7, 0.9, 0.6], [0.7, 0.6, 0.85, 0.65])
    assert paired_ttest(a, b) == expected
    keyed_by_tuple = paired_ttest({("s1", 20): 0.8, ("s1", 21): 0.7, ("s2", 20): 0.5},
                                  {("s2", 20): 0.4, ("s1", 21): 0.6, ("s1", 20): 0.75})
    assert keyed_by_tuple.n == 3


def test_unpaired_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="only in a"):
        paired_ttest({"s1": 1.0, "s2": 2.0, "s3": 3.0}, {"s1": 1.0, "s2": 2.5, "s9": 3.0})
    with pytest.raises(ValueError, match="lengths 3 and 2"):
        paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="both"):
        paired_ttest({"s1": 1.0, "s2": 2.0}, [1.0, 2.0])


def test_pairs_with_nan_are_dropped_and_counted() -> None:
    a = [1.0, 2.0, np.nan, 4.0, 5.5, 7.0]
    b = [0.5, 2.5, 3.0, 3.0, np.nan, 6.0]
    result = paired_ttest(a, b)
    assert (result.n, result.n_dropped) == (4, 2)
    assert result.statistic == pytest.approx(stats.ttest_rel([1.0, 2.0, 4.0, 7.0], [0.5, 2.5, 3.0, 6.0]).statistic)
    with pytest.raises(ValueError, match="at least 2 complete pairs"):
        paired_ttest([1.0, np.nan], [2.0, 3.0])


def test_constant_differences_give_defined_results() -> None:
    identical = paired_ttest([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert (identical.statistic, identical.pvalue) == (0.0, 1.0)
    shifted = paired_ttest([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert (shifted.statistic, shifted.pvalue, shifted.mean_difference) == (-math.inf, 0.0, -1.0)


def test_summarize_known_values() -> None:
    assert summarize([1.0, 2.0, 3.0, 4.0]) == {
        "mean": 2.5,
        "std": pytest.approx(math.sqrt(5 / 3)),
        "median": 2.5,
        "n": 4,
        "n_dropped": 0,
    }
    assert summarize({"a": 1.0, "b": np.nan, "c": 3.0}) == {
        "mean": 2.0, "std": pytest.approx(math.sqrt(2)), "median": 2.0, "n": 2, "n_dropped": 1
    }
    assert summarize([0.5])["std"] == 0.0
    with pytest.raises(ValueError, match="no finite values"):
        summarize([np.nan])
